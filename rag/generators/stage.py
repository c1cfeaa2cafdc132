"""The pipeline stage that turns each state's prompt into an answer."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rag.generators.base import Generator
from rag.pipeline import Stage, State
from rag.prompts import cite
from rag.registry import ComponentConfig, build, register
from rag.types import Answer, SamplingParams


@register("stage", "generate")
class Generate(Stage):
    """Generate for the whole batch in one call; cite the passages the answer refers to."""

    reads = ("prompt",)
    writes = ("generation", "answer")
    nested = ("generator",)

    class Config(ComponentConfig):
        generator: dict[str, Any]
        params: SamplingParams = Field(default_factory=SamplingParams)

    def __init__(
        self, generator: Generator | dict[str, Any] | str,
        params: SamplingParams | dict[str, Any] | None = None,
    ) -> None:
        self.generator: Generator = build("generator", generator)
        super().__init__(generator={"type": self.generator.name}, params=params or SamplingParams())

    def run(self, states: list[State]) -> list[dict[str, Any]]:
        generations = self.generator.generate([s.prompt for s in states], self.config.params)
        for state, generation in zip(states, generations, strict=True):
            text = generation.text.strip()
            state.generation = generation
            state.answer = Answer(
                query=state.query,
                text=text,
                citations=cite(text, state.sources, state.hits),
                sources=state.sources,
                usage=generation.usage,
            )
        return [{"prompt_tokens": g.usage.prompt_tokens,
                 "cached_prompt_tokens": g.usage.cached_prompt_tokens} for g in generations]
