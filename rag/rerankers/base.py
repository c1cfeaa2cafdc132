"""The reranker interface: reorder a first stage's hits for their query, keeping its scores."""

from __future__ import annotations

from collections.abc import Sequence

from rag.errors import RagError
from rag.registry import Component
from rag.types import Hit


def passage_text(hit: Hit, max_words: int) -> str:
    """A hit as a reranker prompt shows it: its title, then its first `max_words` words."""
    words = hit.chunk.text.split()
    body = " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")
    return f"{hit.chunk.title}: {body}" if hit.chunk.title else body


def rescored(hits: Sequence[Hit], scores: Sequence[float], name: str) -> list[Hit]:
    """New hits ordered by `scores` (stable on ties); each keeps its earlier scores by stage."""
    if len(hits) != len(scores):
        raise RagError(f"{name}: {len(scores)} scores for {len(hits)} hits")
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    return [
        Hit(
            chunk=hits[i].chunk,
            score=float(scores[i]),
            retriever=name,
            scores={**hits[i].scores, hits[i].retriever: hits[i].score},
        )
        for i in order
    ]


class Reranker(Component):
    """Base of rerankers: `rerank` takes a batch of queries, each with its first-stage hits."""

    kind = "reranker"

    def rerank(self, queries: Sequence[str], hits: Sequence[Sequence[Hit]]) -> list[list[Hit]]:
        raise NotImplementedError

    @staticmethod
    def check(queries: Sequence[str], hits: Sequence[Sequence[Hit]]) -> None:
        if len(queries) != len(hits):
            raise RagError(f"rerank() needs one hit list per query: {len(queries)} queries, {len(hits)} lists")
