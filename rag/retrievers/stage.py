"""The pipeline stage that fills each state's hits from a retriever."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from rag.pipeline import Stage, Writes, per_setting
from rag.registry import ComponentConfig, register
from rag.retrievers.base import Retriever
from rag.retrievers.filters import FilterField, MetadataFilter, parse_filter
from rag.retrievers.fusion import rrf
from rag.state import View
from rag.types import Hit, Message, RetrievalOverride

Search = Literal["query", "conversation", "fused"]


def conversation_query(history: Sequence[Message], query: str, turns: int = 6) -> str:
    """A conversation as one search string: the query, then the last `turns` user and assistant
    messages, newest first, so an encoder that truncates its input keeps the newest words."""
    said = [m.content for m in history if m.role in ("user", "assistant")][-turns:]
    return " ".join([query, *reversed(said)])


@register("stage", "retrieve")
class Retrieve(Stage):
    """Search the batch's queries in one call per distinct (k, filter): the configured ones, or
    a request's own (`retrieval`, e.g. `extra_body={"filter": ..., "k": ...}` through the
    server). What is searched for a query with history (`search`): its `standalone` form
    (`condense`, else the query itself), the whole conversation, or both with their rankings
    fused by reciprocal rank (RAG-Fusion), which recovers a follow-up whose rewrite kept its
    pronoun. A query without history is searched as itself in every mode."""

    reads = ("query",)
    optional_reads = ("retrieval", "standalone", "history")
    writes = ("hits",)
    nested = {"retriever": "retriever"}

    class Config(ComponentConfig):
        retriever: dict[str, Any]
        k: int = Field(default=5, ge=1)
        filter: FilterField = Field(
            default=None, description="keep only chunks whose metadata match (docs/filters.md)")
        search: Search = Field(
            default="query", description="for a query with history: its standalone form "
            "('query'), the conversation ('conversation') or both fused by rank ('fused')")

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
        found = per_setting(settings, lambda setting, members: self.search(
            [batch[i] for i in members], *setting))
        return [{"hits": hits} for hits in found]

    def strings(self, item: View) -> list[str]:
        """What one state is searched with: one string, or the two whose rankings are fused."""
        own = item.standalone or item.query
        if not item.history or self.config.search == "query":
            return [own]
        conversation = conversation_query(item.history, item.query)
        return [conversation] if self.config.search == "conversation" else [own, conversation]

    def search(self, batch: list[View], k: int, chosen: MetadataFilter | None) -> list[list[Hit]]:
        """One retriever call for the whole batch's strings; two rankings fused per `fused` state."""
        strings = [self.strings(item) for item in batch]
        flat = self.retriever.search([s for per in strings for s in per], k=k, filter=chosen)
        out, at = [], 0
        for per in strings:
            runs, at = flat[at : at + len(per)], at + len(per)
            out.append(runs[0] if len(runs) == 1 else
                       rrf(runs, names=["standalone", "conversation"], label="conversation")[:k])
        return out
