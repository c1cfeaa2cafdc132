"""Metrics: QA exact match / F1 / accuracy, retrieval over ranked lists of ids (one gold id per
query), pass@k for code, and latency and token usage from pipeline traces.

QA follows the SQuAD / FlashRAG conventions: answers are normalized (lower-case, no punctuation,
no articles, single spaces) and scored against the best of several gold answers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from rag.text import normalize_answer
from rag.types import Hit, StageTrace

_SPECIAL = {"yes", "no", "noanswer"}


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals a normalized gold answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def accuracy(prediction: str, golds: Sequence[str]) -> float:
    """FlashRAG's "acc" (sub-EM): 1.0 when a normalized gold answer occurs in the prediction."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) in pred for g in golds if normalize_answer(g)))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best token-level F1 against the gold answers; yes/no/noanswer must match exactly."""
    best = 0.0
    pred = normalize_answer(prediction)
    for gold in map(normalize_answer, golds):
        if (pred in _SPECIAL or gold in _SPECIAL) and pred != gold:
            continue
        common = Counter(pred.split()) & Counter(gold.split())
        same = sum(common.values())
        if same:
            precision, recall = same / len(pred.split()), same / len(gold.split())
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def qa_scores(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    return {"em": exact_match(prediction, golds), "f1": token_f1(prediction, golds),
            "acc": accuracy(prediction, golds)}


def stage_seconds(traces: Sequence[Sequence[StageTrace]]) -> dict[str, float]:
    """Mean seconds per query spent in each stage (a stage's batch time shared by its batch)."""
    totals: dict[str, float] = {}
    for trace in traces:
        for step in trace:
            totals[step.stage] = totals.get(step.stage, 0.0) + step.seconds / max(step.batch_size, 1)
    return {stage: total / len(traces) for stage, total in totals.items()} if traces else {}


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


def ranking_scores(ranked: Sequence[Sequence[str | Hit]], golds: Sequence[str],
                   depths: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Known-item ranking quality, rounded for a report row: R@k for each depth, MRR@10, nDCG@10.
    `ranked` holds document ids best first, or a retriever's hits (scored by their documents)."""
    ranked = [[r.chunk.doc_id if isinstance(r, Hit) else r for r in row] for row in ranked]
    scores = {f"R@{k}": recall_at(ranked, golds, k) for k in depths}
    scores |= {"MRR@10": mrr_at(ranked, golds, 10), "nDCG@10": ndcg_at(ranked, golds, 10)}
    return {name: round(value, 4) for name, value in scores.items()}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n - c, k) / C(n, k), for c correct of n samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: for per-question scores, or for paired
    per-question differences of two systems (then it is the interval of the delta)."""
    import numpy as np

    if not values:
        raise ValueError("bootstrap_interval needs at least one value")
    data = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(data), (resamples, len(data)))
    means = data[draws].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_bootstrap_interval(system: Sequence[float], baseline: Sequence[float],
                              level: float = 0.95, resamples: int = 2000,
                              seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of mean(system - baseline) over the same items, resampling items, not
    each system apart: the items' shared difficulty cancels, so the interval of the delta is the
    narrower one that a comparison of two systems on one test set calls for."""
    if len(system) != len(baseline):
        raise ValueError(
            f"paired scores need one per item in both: {len(system)} vs {len(baseline)}")
    return bootstrap_interval([float(a) - float(b) for a, b in zip(system, baseline)], level,
                              resamples, seed)


def paired_difference(system: Sequence[float], baseline: Sequence[float],
                      digits: int = 4) -> tuple[float, list[float]]:
    """mean(system) - mean(baseline) over the same items and its paired 95% bootstrap interval,
    rounded as results files report them: the pair every "ours minus theirs" row carries."""
    low, high = paired_bootstrap_interval(system, baseline)
    delta = sum(float(a) - float(b) for a, b in zip(system, baseline)) / len(system)
    return round(delta, digits), [round(low, digits), round(high, digits)]
