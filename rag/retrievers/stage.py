"""The pipeline stage that fills each state's hits from a retriever."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rag.pipeline import Stage, State
from rag.registry import ComponentConfig, build, register
from rag.retrievers.base import Retriever


@register("stage", "retrieve")
class Retrieve(Stage):
    """Search the whole batch of queries in one call."""

    reads = ("query",)
    writes = ("hits",)
    nested = ("retriever",)

    class Config(ComponentConfig):
        retriever: dict[str, Any]
        k: int = Field(default=5, ge=1)

    config: Config

    def __init__(self, retriever: Retriever | dict[str, Any], k: int = 5) -> None:
        self.retriever: Retriever = build("retriever", retriever)
        super().__init__(retriever={"type": self.retriever.name}, k=k)

    def run(self, states: list[State]) -> None:
        results = self.retriever.search([s.query for s in states], k=self.config.k)
        for state, hits in zip(states, results, strict=True):
            state.hits = hits
