"""The pipeline stage that reorders each state's hits with a reranker."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rag.pipeline import Stage, State
from rag.registry import ComponentConfig, build, register
from rag.rerankers.base import Reranker


@register("stage", "rerank")
class Rerank(Stage):
    """Rerank the whole batch in one call; keep the best `k` (all when unset)."""

    reads = ("query", "hits")
    writes = ("hits",)
    nested = ("reranker",)

    class Config(ComponentConfig):
        reranker: dict[str, Any]
        k: int | None = Field(default=None, ge=1)

    config: Config

    def __init__(self, reranker: Reranker | dict[str, Any], k: int | None = None) -> None:
        self.reranker: Reranker = build("reranker", reranker)
        super().__init__(reranker={"type": self.reranker.name}, k=k)

    def run(self, states: list[State]) -> list[dict[str, Any]]:
        first_stage = [{h.chunk.id: h.score for h in s.hits} for s in states]
        reranked = self.reranker.rerank([s.query for s in states], [s.hits for s in states])
        for state, hits in zip(states, reranked, strict=True):
            state.hits = hits[: self.config.k] if self.config.k else hits
        return [{"first_stage_scores": scores} for scores in first_stage]
