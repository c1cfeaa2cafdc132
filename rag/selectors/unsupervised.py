"""Selectors that need no training: random, BM25, dense kNN and MMR.

Pools here hold thousands of demonstrations, so ranking is exact (a BM25 score vector or one
matrix product per batch) rather than through an approximate index.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from rag.encoders.dense import Encoder
from rag.registry import register
from rag.selectors.base import Selector, SelectorConfig
from rag.types import Demo


@register("selector", "random")
class RandomSelector(Selector):
    """Uniformly random demonstrations, the same for the same query and seed in any batch."""

    class Config(SelectorConfig):
        seed: int = 0

    config: Config

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return np.stack([
            np.random.default_rng([self.config.seed, zlib.crc32(q.encode())]).random(len(self.pool))
            for q in queries
        ]) if queries else np.zeros((0, len(self.pool)))


@register("selector", "bm25")
class BM25Selector(Selector):
    """Okapi BM25 between the query and each demonstration's input (bm25s, English stopwords)."""

    class Config(SelectorConfig):
        k1: float = Field(default=1.5, gt=0)
        b: float = Field(default=0.75, ge=0, le=1)

    config: Config
    _bm25: Any = None

    @staticmethod
    def _tokens(texts: Sequence[str]) -> Any:
        import bm25s

        return bm25s.tokenize(list(texts), stopwords="en", show_progress=False)

    def _index(self, pool: list[Demo]) -> None:
        import bm25s

        self._bm25 = bm25s.BM25(k1=self.config.k1, b=self.config.b)
        self._bm25.index(self._tokens([d.input for d in pool]), show_progress=False)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        tokens = self._tokens(queries)
        vocab = {i: w for w, i in tokens.vocab.items()}
        return np.stack([self._bm25.get_scores([vocab[i] for i in ids]) for ids in tokens.ids]) \
            if queries else np.zeros((0, len(self.pool)))


@register("selector", "knn")
class KNNSelector(Selector):
    """Nearest demonstrations by the encoder's inner product (cosine for normalized encoders).

    Learned selectors (EPR, LLM-R, LAIL) are this selector with a fine-tuned encoder.
    """

    nested = {"encoder": "encoder"}

    class Config(SelectorConfig):
        encoder: dict[str, Any] = Field(default_factory=lambda: {"type": "sentence_transformers"})

    config: Config
    encoder: Encoder
    vectors: np.ndarray = np.zeros((0, 0), dtype=np.float32)  # the pool's, once fitted

    def _index(self, pool: list[Demo]) -> None:
        self.vectors = self.encoder.encode_documents([d.input for d in pool])

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_queries(list(queries)) @ self.vectors.T


@register("selector", "mmr")
class MMRSelector(KNNSelector):
    """Maximal marginal relevance: each pick maximizes λ·sim(query, d) − (1−λ)·max sim(d, picked).

    λ = 1 is kNN; lower λ trades relevance for demonstrations that differ from each other.
    """

    class Config(KNNSelector.Config):
        relevance_weight: float = Field(default=0.7, ge=0, le=1, description="MMR's λ")
        candidates: int = Field(default=50, ge=1, description="rerank this many nearest first")

    config: Config

    def _pick(self, scores: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
        nearest = super()._pick(scores, allowed, min(max(k, self.config.candidates), int(allowed.sum())))
        lam = self.config.relevance_weight
        picked: list[int] = []
        redundancy = np.full(len(nearest), -np.inf)
        for _ in range(k):
            value = lam * scores[nearest] - (1 - lam) * np.where(np.isinf(redundancy), 0, redundancy)
            value[[nearest.index(p) for p in picked]] = -np.inf
            best = int(np.argmax(value))
            picked.append(nearest[best])
            redundancy = np.maximum(redundancy, self.vectors[nearest] @ self.vectors[nearest[best]])
        return picked
