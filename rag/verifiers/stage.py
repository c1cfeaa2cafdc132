"""Pipeline stages that check answers: self-consistency voting and grounding."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rag.generators.base import Generator
from rag.pipeline import Stage, State
from rag.prompts import cite
from rag.registry import ComponentConfig, build, register
from rag.verifiers.consistency import majority_answer
from rag.verifiers.grounding import check_grounding


@register("stage", "vote")
class Vote(Stage):
    """Replace the answer by the majority of the sampled completions (generate with n > 1)."""

    reads = ("generation", "answer")
    writes = ("answer",)

    def run(self, states: list[State]) -> list[dict[str, Any]]:
        infos = []
        for state in states:
            completions = state.generation.completions
            texts = [c.text.strip() for c in completions]
            chosen, share = majority_answer(texts, [c.logprob or 0.0 for c in completions])
            citations = cite(texts[chosen], state.answer.sources, state.hits)
            state.answer = state.answer.model_copy(
                update={"text": texts[chosen], "citations": citations, "agreement": share}
            )
            infos.append({"samples": len(texts), "agreement": share})
        return infos


@register("stage", "ground")
class Ground(Stage):
    """Mark each answer supported or not by the passages it was shown (`Answer.supported`)."""

    reads = ("query", "hits", "answer")
    writes = ("answer",)
    nested = ("generator",)

    class Config(ComponentConfig):
        generator: dict[str, Any] | None = Field(
            default=None, description="LLM judge for answers that string containment cannot settle"
        )
        threshold: float = Field(default=0.5, gt=0, lt=1)

    config: Config

    def __init__(self, generator: Generator | dict[str, Any] | str | None = None, threshold: float = 0.5) -> None:
        self.generator: Generator | None = build("generator", generator) if generator is not None else None
        spec = {"type": self.generator.name} if self.generator is not None else None
        super().__init__(generator=spec, threshold=threshold)

    def run(self, states: list[State]) -> list[dict[str, Any]]:
        verdicts = check_grounding(
            [s.query for s in states], [s.answer.text for s in states],
            [[h.chunk.text for h in s.hits] for s in states], self.generator, self.config.threshold,
        )
        for state, verdict in zip(states, verdicts, strict=True):
            state.answer = state.answer.model_copy(update={"supported": verdict.supported})
        return [verdict.model_dump() for verdict in verdicts]
