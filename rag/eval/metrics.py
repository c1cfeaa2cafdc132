"""Metrics: retrieval over ranked lists of ids (one gold id per query), and pass@k for code."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _first_rank(ranked: Sequence[str], gold: str) -> int | None:
    """1-based rank of the first occurrence of `gold`, or None."""
    for rank, item in enumerate(ranked, 1):
        if item == gold:
            return rank
    return None


def recall_at(ranked: Sequence[Sequence[str]], golds: Sequence[str], k: int) -> float:
    """Share of queries whose gold id is among the first k results."""
    hits = [(r := _first_rank(items, gold)) is not None and r <= k for items, gold in zip(ranked, golds)]
    return sum(hits) / len(golds) if golds else 0.0


def mrr_at(ranked: Sequence[Sequence[str]], golds: Sequence[str], k: int) -> float:
    """Mean reciprocal rank of the gold id, counting 0 when it is not in the first k."""
    total = 0.0
    for items, gold in zip(ranked, golds):
        rank = _first_rank(items, gold)
        total += 1.0 / rank if rank is not None and rank <= k else 0.0
    return total / len(golds) if golds else 0.0


def ndcg_at(ranked: Sequence[Sequence[str]], golds: Sequence[str], k: int) -> float:
    """nDCG@k with one relevant id per query: 1 / log2(rank + 1) when it is in the first k."""
    total = 0.0
    for items, gold in zip(ranked, golds):
        rank = _first_rank(items, gold)
        total += 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0
    return total / len(golds) if golds else 0.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n - c, k) / C(n, k), for c correct of n samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
