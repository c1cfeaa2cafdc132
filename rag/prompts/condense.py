"""The `condense` stage: a follow-up question rewritten, with its conversation, into a standalone
question for retrieval (the condense-question step of LlamaIndex's and Haystack's chat engines).

"Who wrote the novel it was developed with?" after a turn about *2001: A Space Odyssey* searches
for nothing useful alone; rewritten as "Who wrote the novel 2001: A Space Odyssey was developed
with?" it finds the article. The rewrite goes to the state's `standalone` field, which the
`retrieve` stage searches with; the prompt keeps the user's own words and the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from rag.generators.base import Generator
from rag.pipeline import Stage, Writes
from rag.registry import ComponentConfig, register
from rag.state import View
from rag.types import Message, Prompt, SamplingParams

CONDENSE_SYSTEM = (
    "Rewrite the user's last message as one standalone question that can be understood without "
    "the conversation: replace words such as 'it', 'he', 'she', 'they' or 'this' with what they "
    "refer to. Reply with the question only."
)


def condense_prompt(history: Sequence[Message], question: str, system: str = CONDENSE_SYSTEM,
                    turns: int = 6) -> Prompt:
    """The conversation's last `turns` messages as a transcript, then the message to rewrite."""
    transcript = "\n".join(f"{m.role.capitalize()}: {m.content}" for m in history[-turns:]
                           if m.role in ("user", "assistant"))
    return Prompt(messages=[
        Message(role="system", content=system),
        Message(role="user", content=f"Conversation:\n{transcript}\n\nLast message: {question}"
                                     "\n\nStandalone question:"),
    ])


def first_line(text: str) -> str:
    """The rewrite a model gave: its first non-empty line, without a label or quotes."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if line.lower().startswith("standalone question:"):
        line = line.split(":", 1)[1].strip()
    return line.strip('"“”')


@register("stage", "condense")
class Condense(Stage):
    """Write each query's standalone question: the query itself when it has no history (no
    generation), else the generator's rewrite of it in the context of the history."""

    reads = ("query", "history")
    writes = ("standalone",)
    nested = {"generator": "generator"}

    class Config(ComponentConfig):
        generator: dict[str, Any]
        system: str = CONDENSE_SYSTEM
        turns: int = Field(default=6, ge=1, description="most recent history messages shown")
        max_tokens: int = Field(default=48, ge=1)

    config: Config
    generator: Generator

    def run(self, batch: list[View]) -> list[Writes]:
        out: list[Writes] = [{"standalone": item.query} for item in batch]
        followups = [i for i, item in enumerate(batch) if item.history]
        if not followups:
            return out
        prompts = [condense_prompt(batch[i].history, batch[i].query, self.config.system,
                                   self.config.turns) for i in followups]
        made = self.generator.generate(prompts, SamplingParams(max_tokens=self.config.max_tokens,
                                                               temperature=0.0))
        for i, generation in zip(followups, made, strict=True):
            rewrite = first_line(generation.text)
            out[i] = {"standalone": rewrite or batch[i].query,
                      "trace": {"prompt_tokens": generation.usage.prompt_tokens}}
        return out
