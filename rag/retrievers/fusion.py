"""Fusion of several retrievers' rankings: reciprocal rank fusion and a convex combination.

RRF (Cormack et al. 2009): s(d) = sum over runs of w / (rrf_k + rank), ranks from 1.
Convex: each run's scores min-max normalized per query, a document missing from a run gets that
run's minimum (0 after normalization), then s(d) = sum of w_i * s_i(d).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from rag.errors import IndexLoadError
from rag.registry import ComponentConfig, register
from rag.retrievers.base import Filter, Retriever, check_k, read_manifest, write_manifest
from rag.retrievers.filters import parse_filter
from rag.types import Chunk, Hit

FORMAT = "rag-icl/hybrid-v1"


def _fused(runs: Sequence[Sequence[Hit]], scores: dict[str, float], names: list[str],
           label: str = "hybrid") -> list[Hit]:
    first: dict[str, Hit] = {}
    per_run: dict[str, dict[str, float]] = {}
    for name, run in zip(names, runs):
        for hit in run:
            first.setdefault(hit.chunk.id, hit)
            per_run.setdefault(hit.chunk.id, {})[name] = hit.score
    ranked = sorted(scores, key=lambda cid: -scores[cid])
    return [Hit(chunk=first[c].chunk, score=scores[c], retriever=label, scores=per_run[c])
            for c in ranked]


def rrf(runs: Sequence[Sequence[Hit]], weights: Sequence[float] | None = None, rrf_k: int = 60,
        names: list[str] | None = None, label: str = "hybrid") -> list[Hit]:
    """Reciprocal rank fusion of ranked runs (each best first); the hits name `label` as their
    retriever and keep each run's own score under its name."""
    weights = weights or [1.0] * len(runs)
    scores: dict[str, float] = {}
    for weight, run in zip(weights, runs):
        for rank, hit in enumerate(run, 1):
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + weight / (rrf_k + rank)
    return _fused(runs, scores, names or [str(i) for i in range(len(runs))], label)


def convex(runs: Sequence[Sequence[Hit]], weights: Sequence[float],
           names: list[str] | None = None) -> list[Hit]:
    """Weighted sum of per-run min-max normalized scores; absent documents score 0 in a run."""
    scores: dict[str, float] = {}
    for weight, run in zip(weights, runs):
        if not run:
            continue
        low, high = min(h.score for h in run), max(h.score for h in run)
        span = high - low
        for hit in run:
            normalized = (hit.score - low) / span if span > 0 else 1.0
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + weight * normalized
    for run in runs:
        for hit in run:
            scores.setdefault(hit.chunk.id, 0.0)
    return _fused(runs, scores, names or [str(i) for i in range(len(runs))])


@register("retriever", "hybrid")
class HybridRetriever(Retriever):
    """Search every child retriever `candidates` deep, fuse, keep the top k."""

    format = FORMAT

    nested = {"retrievers": "retriever"}

    class Config(ComponentConfig):
        retrievers: list[dict[str, Any]] = Field(default_factory=list)
        path: str | None = Field(default=None, description="a saved hybrid folder to load")
        method: Literal["rrf", "convex"] = "rrf"
        weights: list[float] | None = Field(
            default=None, description="one per retriever; rrf default 1 each, convex default equal"
        )
        rrf_k: int = Field(default=60, ge=1)
        candidates: int = Field(default=100, ge=1, description="hits taken from each retriever")

        @model_validator(mode="after")
        def _weights_fit(self) -> HybridRetriever.Config:
            if len(self.retrievers) < 2 and self.path is None:
                raise ValueError("a hybrid needs at least 2 retrievers, or the `path` of a saved one")
            if self.weights is not None and len(self.weights) != len(self.retrievers):
                raise ValueError(f"{len(self.weights)} weights for {len(self.retrievers)} retrievers")
            return self

    config: Config
    retrievers: list[Retriever]

    def __init__(self, retrievers: Sequence[Retriever | dict[str, Any]] = (), **kwargs: Any) -> None:
        if kwargs.get("path") and not retrievers:  # a saved hybrid: its manifest names the rest
            saved = dict(read_manifest(kwargs["path"], FORMAT)["spec"])
            saved.pop("type")
            if not isinstance(saved.get("retrievers"), list):
                raise IndexLoadError(f"{kwargs['path']}: hybrid manifest has no retrievers")
            folder = Path(kwargs["path"])
            retrievers = [{**r, "path": str(folder / r["path"])} if r.get("path") else r
                          for r in saved.pop("retrievers")]
            kwargs = {**{k: v for k, v in saved.items() if k != "path"}, **kwargs}
        super().__init__(retrievers=list(retrievers), **kwargs)
        self.names = [f"{i}:{c.name}" for i, c in enumerate(self.retrievers)]

    def __len__(self) -> int:
        return len(self.retrievers[0])

    @property
    def chunks(self) -> list[Chunk]:
        """The indexed chunks (every child holds the same ones)."""
        return self.retrievers[0].chunks  # type: ignore[attr-defined]

    def index(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        for child in self.retrievers:
            child.index(chunks, progress)

    def add(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        for child in self.retrievers:
            child.add(chunks, progress)

    def delete(self, ids: Sequence[str]) -> None:
        for child in self.retrievers:
            child.delete(ids)

    def search(
        self, queries: Sequence[str], k: int = 10, filter: Filter | None = None
    ) -> list[list[Hit]]:
        check_k(k)
        depth = max(k, self.config.candidates)
        filter = parse_filter(filter)  # parsed once; each child applies it inside its own index
        runs = [child.search(queries, depth, filter) for child in self.retrievers]
        n = len(self.retrievers)
        fused = []
        for per_query in zip(*runs):
            if self.config.method == "rrf":
                hits = rrf(per_query, self.config.weights, self.config.rrf_k, self.names)
            else:
                hits = convex(per_query, self.config.weights or [1.0 / n] * n, self.names)
            fused.append(hits[:k])
        return fused

    def save(self, path: str | Path, subfolder: str = "",
             extra: dict[str, Any] | None = None) -> None:
        """Each child into its own subfolder (under `subfolder`, when given), then a manifest
        holding the hybrid's spec (and `extra`); the folder then loads as one retriever
        (`{"type": "hybrid", "path": FOLDER}`). The manifest is written last, in one rename."""
        folder = Path(path)
        subfolders = [str(Path(subfolder, name.replace(":", "-"))) for name in self.names]
        for sub, child in zip(subfolders, self.retrievers):
            child.save(folder / sub)
        spec = {**self.config.model_dump(mode="json"), "type": self.name, "path": None,
                # children by subfolder, so the saved hybrid can move as one folder
                "retrievers": [{**c.spec(), "path": sub} for sub, c in zip(subfolders, self.retrievers)]}
        write_manifest(folder, FORMAT, {"spec": spec, **(extra or {})})
        self.config.path = str(folder)

    def spec(self) -> dict[str, Any]:
        """A saved hybrid is named by its folder alone."""
        if self.config.path and not any(c._unsaved for c in self.retrievers):
            return {"type": self.name, "path": self.config.path}
        return super().spec()

    @classmethod
    def load(cls, path: str | Path) -> HybridRetriever:
        return cls(path=str(path))
