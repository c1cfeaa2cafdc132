"""The selector interface: pick k demonstrations per query from a pool.

Every selector ranks the pool for each query and returns the top k, most relevant first, each
with its score. Two rules hold for all of them: a pool entry with the query's own input is never
returned (so leave-one-out evaluation over a single pool is safe), and asking for more
demonstrations than the pool can give is an error, not a silent shortfall.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from rag.ingest.jsonl import iter_json_lines
from rag.errors import CorpusError, RagError
from rag.registry import Component, ComponentConfig
from rag.storage import atomic_write_text
from rag.types import Demo


class SelectorError(RagError):
    """A selector cannot do what was asked: no pool, or k larger than what the pool offers."""


def read_demos(path: str | Path) -> list[Demo]:
    """A JSONL pool: one `{"id", "input", "output"}` object per line; errors name file:line."""
    demos: list[Demo] = []
    seen: set[str] = set()
    for where, record in iter_json_lines(path):
        if not isinstance(record, dict) or not all(
            isinstance(record.get(f), str) for f in ("input", "output")
        ) or "id" not in record:
            raise CorpusError(f"{where}: expected an object with 'id', 'input' and 'output' strings")
        if str(record["id"]) in seen:
            raise CorpusError(f"{where}: duplicate id {record['id']!r}")
        seen.add(str(record["id"]))
        demos.append(Demo(id=str(record["id"]), input=record["input"], output=record["output"],
                          metadata=record.get("metadata") or {}))
    return demos


def write_demos(path: str | Path, demos: Sequence[Demo]) -> Path:
    """Write a pool as JSONL (the format `read_demos` and `pool:` read), atomically."""
    lines = [json.dumps({"id": d.id, "input": d.input, "output": d.output,
                         **({"metadata": d.metadata} if d.metadata else {})}) for d in demos]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def regroup(flat: Sequence[float], groups: Sequence[Sequence[Any]]) -> list[list[float]]:
    """Split a flat list of per-candidate values back into one list per anchor."""
    out, start = [], 0
    for group in groups:
        out.append(list(flat[start : start + len(group)]))
        start += len(group)
    return out


class SelectorConfig(ComponentConfig):
    pool: str | None = Field(default=None, description="JSONL pool to load; None: call fit()")


class Selector(Component):
    """Base of selectors: `fit` a pool once, then `select` for batches of queries."""

    kind = "selector"
    config: SelectorConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool: list[Demo] = []
        if self.config.pool:
            self.fit(read_demos(self.config.pool))

    def spec(self) -> dict[str, Any]:
        if self.pool and not self.config.pool:
            raise SelectorError(
                f"this {self.name} selector was fitted in memory, so a pipeline file could not "
                "rebuild it: write its pool with `write_demos(PATH, demos)` and build it with "
                "`pool: PATH` (trained selectors: name their folder)")
        return super().spec()

    def fit(self, pool: Sequence[Demo]) -> Selector:
        if not pool:
            raise SelectorError(f"{self.name} selector: the demonstration pool is empty")
        self.pool = list(pool)
        self._inputs = np.array([d.input.strip() for d in self.pool], dtype=object)
        self._index(self.pool)
        return self

    def _index(self, pool: list[Demo]) -> None:
        """Precompute whatever ranking needs (vectors, term statistics)."""

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """Relevance of every pool entry to every query, shape (queries, pool)."""
        raise NotImplementedError

    def select(self, queries: Sequence[str], k: int) -> list[list[Demo]]:
        """The k best demonstrations per query, most relevant first."""
        allowed = self._allowed(queries, k)
        scores = self.scores(queries)
        return [self._demos(self._pick(row, mask, k), row) for row, mask in zip(scores, allowed)]

    def _pick(self, scores: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
        """Pool indices to return for one query; the default is the top k by score."""
        masked = np.where(allowed, scores, -np.inf)
        top = np.argpartition(-masked, k - 1)[:k]
        return top[np.argsort(-masked[top], kind="stable")].tolist()

    def _allowed(self, queries: Sequence[str], k: int) -> np.ndarray:
        """Which pool entries each query may receive: all but those with the query's own input."""
        if not self.pool:
            raise SelectorError(f"{self.name} selector has no pool: call fit() or set `pool`")
        if k < 1:
            raise SelectorError(f"k must be at least 1, got {k}")
        allowed = np.stack([self._inputs != q.strip() for q in queries]) if queries else np.zeros(
            (0, len(self.pool)), dtype=bool)
        for query, mask in zip(queries, allowed):
            if mask.sum() < k:
                raise SelectorError(
                    f"k={k} demonstrations asked for, but the pool offers {int(mask.sum())} for "
                    f"the query {query[:60]!r}; lower k or grow the pool"
                )
        return allowed

    def _demos(self, indices: list[int], scores: np.ndarray) -> list[Demo]:
        return [self.pool[i].model_copy(update={"score": float(scores[i])}) for i in indices]
