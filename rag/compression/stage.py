"""The pipeline stage that compresses each state's passages before the prompt is built."""

from __future__ import annotations

from typing import Any

from rag.compression.base import Compressor
from rag.pipeline import Stage, Writes
from rag.registry import ComponentConfig, register
from rag.state import View


@register("stage", "compress")
class Compress(Stage):
    """Between retrieval (or reranking) and the prompt; records tokens before and after."""

    reads = ("query", "hits")
    writes = ("hits",)
    nested = {"compressor": "compressor"}

    class Config(ComponentConfig):
        compressor: dict[str, Any]

    config: Config
    compressor: Compressor

    def run(self, batch: list[View]) -> list[Writes]:
        results = self.compressor.compress([item.query for item in batch], [item.hits for item in batch])
        return [{"hits": r.hits, "trace": {"original_tokens": r.original_tokens,
                                           "kept_tokens": r.kept_tokens, "ratio": round(r.ratio, 3)}}
                for r in results]
