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
        return f"{self.query(demo.input)}{self.answer(demo.output)}"

    def query(self, text: str) -> str:
        """The open block the model completes; its answer is scored as `answer(output)`."""
        return f"{self.input_prefix}{text}{self.output_prefix}"

    def answer(self, output: str) -> str:
        """What follows `query` in a demonstration: the continuation an output is scored as."""
        return f"{self.output_lead}{output}"

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


def predict_labels(
    next_token_logprobs: Callable[[list[str]], Sequence[Sequence[float]]],
    template: DemoTemplate, labels: Sequence[str],
) -> list[str]:
    """Per prompt, the label whose answer's first token is likeliest after the ICL prompt.

    `next_token_logprobs(options)` scores the options after every prompt (a generator's, over
    texts or token ids); the options are `template.answer(label)`, exactly what a prompt of this
    template is followed by, so every benchmark scores labels as the ICL pipeline writes them.
    """
    rows = next_token_logprobs([template.answer(label) for label in labels])
    return [labels[max(range(len(labels)), key=row.__getitem__)] for row in rows]


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
