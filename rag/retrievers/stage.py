"""The pipeline stage that fills each state's hits from a retriever."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rag.pipeline import Stage, Writes
from rag.registry import ComponentConfig, register
from rag.retrievers.base import Retriever
from rag.retrievers.filters import FilterField
from rag.state import View


@register("stage", "retrieve")
class Retrieve(Stage):
    """Search the whole batch of queries in one call."""

    reads = ("query",)
    writes = ("hits",)
    nested = {"retriever": "retriever"}

    class Config(ComponentConfig):
        retriever: dict[str, Any]
        k: int = Field(default=5, ge=1)
        filter: FilterField = Field(
            default=None, description="keep only chunks whose metadata match (docs/filters.md)")

    config: Config
    retriever: Retriever

    def run(self, batch: list[View]) -> list[Writes]:
        results = self.retriever.search([item.query for item in batch], k=self.config.k,
                                         filter=self.config.filter)
        return [{"hits": hits} for hits in results]
