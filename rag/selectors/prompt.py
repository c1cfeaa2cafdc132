"""How demonstrations become a prompt: one template for the LLM's scoring and for inference.

Learned selectors are trained on the LLM's log P(output | demonstrations, input) under a
template; the prompt at inference must be the same text, or the feedback no longer describes
it. `DemoTemplate` is that one place. A token budget drops the least relevant demonstrations
first (the end of the selector's ranking), then orders what is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from rag.types import Demo, Message, Prompt

Order = Literal["similar_last", "as_given"]


class DemoTemplate(BaseModel):
    """Plain-text layout: instruction, then `input_prefix input output_prefix output` blocks."""

    instruction: str = ""
    input_prefix: str = "Input: "
    output_prefix: str = "\nOutput:"
    output_lead: str = Field(default=" ", description='before each output: "" for code')
    separator: str = "\n\n"

    def block(self, demo: Demo) -> str:
        return f"{self.input_prefix}{demo.input}{self.output_prefix}{self.output_lead}{demo.output}"

    def query(self, text: str) -> str:
        """The open block the model completes; its answer is scored as `output_lead + output`."""
        return f"{self.input_prefix}{text}{self.output_prefix}"

    def plain(self, demos: Sequence[Demo], text: str) -> str:
        head = [self.instruction] if self.instruction else []
        return self.separator.join([*head, *(self.block(d) for d in demos), self.query(text)])

    def chat(self, demos: Sequence[Demo], text: str) -> Prompt:
        """Each demonstration as a user turn and its output as the assistant's reply."""
        messages = [Message(role="system", content=self.instruction)] if self.instruction else []
        for demo in demos:
            messages += [Message(role="user", content=f"{self.input_prefix}{demo.input}"),
                         Message(role="assistant", content=demo.output)]
        messages.append(Message(role="user", content=f"{self.input_prefix}{text}"))
        return Prompt(messages=messages)


def ordered(demos: Sequence[Demo], order: Order) -> list[Demo]:
    """Ranked (most relevant first) to prompt order: the best next to the query by default."""
    return list(demos)[::-1] if order == "similar_last" else list(demos)


def within_budget(
    demos: Sequence[Demo], fits: Callable[[list[Demo]], bool]
) -> list[Demo]:
    """The longest prefix of the ranking whose prompt fits: the least relevant go first."""
    kept = list(demos)
    while kept and not fits(kept):
        kept.pop()
    return kept
