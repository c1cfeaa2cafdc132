"""The pipeline stage that reorders each state's hits with a reranker."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rag.pipeline import Stage, Writes
from rag.registry import ComponentConfig, register
from rag.rerankers.base import Reranker
from rag.state import View


@register("stage", "rerank")
class Rerank(Stage):
    """Rerank the whole batch in one call; keep the best `k` (all when unset)."""

    reads = ("query", "hits")
    writes = ("hits",)
    nested = {"reranker": "reranker"}

    class Config(ComponentConfig):
        reranker: dict[str, Any]
        k: int | None = Field(default=None, ge=1)

    config: Config
    reranker: Reranker

    def run(self, batch: list[View]) -> list[Writes]:
        reranked = self.reranker.rerank([item.query for item in batch], [item.hits for item in batch])
        return [{"hits": hits[: self.config.k] if self.config.k else hits,
                 "trace": {"first_stage_scores": {h.chunk.id: h.score for h in item.hits}}}
                for item, hits in zip(batch, reranked, strict=True)]
