"""The pipeline stage that fills each state's hits from a retriever."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from rag.pipeline import Stage, Writes, per_setting
from rag.registry import ComponentConfig, register
from rag.retrievers.base import Retriever
from rag.retrievers.filters import FilterField, MetadataFilter, parse_filter
from rag.state import View
from rag.types import RetrievalOverride


@register("stage", "retrieve")
class Retrieve(Stage):
    """Search the batch's queries in one call per distinct (k, filter): the configured ones, or
    a request's own (`retrieval`, e.g. `extra_body={"filter": ..., "k": ...}` through the
    server). A query's `standalone` form (`condense`), when there is one, is what is searched."""

    reads = ("query",)
    optional_reads = ("retrieval", "standalone")
    writes = ("hits",)
    nested = {"retriever": "retriever"}

    class Config(ComponentConfig):
        retriever: dict[str, Any]
        k: int = Field(default=5, ge=1)
        filter: FilterField = Field(
            default=None, description="keep only chunks whose metadata match (docs/filters.md)")

    config: Config
    retriever: Retriever

    def settings(self, item: View) -> tuple[int, MetadataFilter | None]:
        """The k and filter this state is searched with."""
        asked: RetrievalOverride | None = item.retrieval
        if asked is None:
            return self.config.k, self.config.filter
        return (asked.k or self.config.k,
                parse_filter(asked.filter) if asked.filter is not None else self.config.filter)

    def run(self, batch: list[View]) -> list[Writes]:
        settings = [(json.dumps([k, chosen.model_dump(mode="json") if chosen else None],
                                sort_keys=True), (k, chosen))
                    for k, chosen in map(self.settings, batch)]
        found = per_setting(settings, lambda setting, members: self.retriever.search(
            [batch[i].standalone or batch[i].query for i in members], k=setting[0],
            filter=setting[1]))
        return [{"hits": hits} for hits in found]
