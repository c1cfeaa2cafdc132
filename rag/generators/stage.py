"""The pipeline stage that turns each state's prompt into an answer, whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field

from rag.generators.base import Generator
from rag.pipeline import Stage, Writes, per_setting
from rag.registry import ComponentConfig, register
from rag.state import View
from rag.types import Completion, Generation, SamplingParams, TextDelta, Usage


@register("stage", "generate")
class Generate(Stage):
    """Generate for the whole batch in one call; the first completion is the answer's text.

    With `params.n > 1` every completion is kept in `generation` and the first is the answer,
    for later stages (`vote`, `extract_programs` and `pick`) to choose among them. A state's
    `sampling` (a served request's fields) replaces the configured `params` field by field.
    """

    reads = ("prompt",)
    optional_reads = ("sampling",)  # a request's own decoding settings (`rag serve`)
    writes = ("generation", "text")
    nested = {"generator": "generator"}
    streams = True

    class Config(ComponentConfig):
        generator: dict[str, Any]
        params: SamplingParams = Field(default_factory=SamplingParams)

    config: Config
    generator: Generator

    def _writes(self, generation: Generation) -> Writes:
        return {"generation": generation, "text": generation.text.strip(),
                "trace": {"prompt_tokens": generation.usage.prompt_tokens,
                          "cached_prompt_tokens": generation.usage.cached_prompt_tokens,
                          "dtype": self.generator.dtype}}

    def params(self, item: View) -> SamplingParams:
        """The configured params, with the fields this state's request set laid over them."""
        if item.sampling is None:
            return self.config.params
        asked = item.sampling.model_dump(exclude_none=True)
        return SamplingParams.model_validate({**self.config.params.model_dump(), **asked})

    def _generate(self, batch: list[View]) -> list[Generation]:
        """One generator call per distinct setting in the batch (one call when none is asked)."""
        settings = [(params.model_dump_json(), params) for params in map(self.params, batch)]
        return per_setting(settings, lambda params, members: self.generator.generate(
            [batch[i].prompt for i in members], params))

    def run(self, batch: list[View]) -> list[Writes]:
        generations = self._generate(batch)
        return [self._writes(g) for g in generations]

    def stream(self, item: View) -> AsyncIterator[TextDelta]:
        return self.generator.stream(item.prompt, self.params(item).model_copy(update={"n": 1}))

    def streamed(self, item: View, text: str, usage: Usage, finish_reason: str | None) -> Writes:
        completion = Completion(text=text, finish_reason=finish_reason)
        return self._writes(Generation(completions=[completion], usage=usage))
