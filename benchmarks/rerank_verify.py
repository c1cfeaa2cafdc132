"""Rerankers on real data: does reordering the first stage's top 20 find the gold article sooner?

Known-item queries over all 10,033 vital articles (`rag.eval.datasets.known_items`, the test
split the retrieval benchmark uses): the top `--depth` of the hybrid retriever (BM25 + MiniLM,
convex, BM25 weight 0.3), then each reranker through the `rerank` stage's component. R@1,
nDCG@10 and reranking seconds per query; the queries are reranked in `--slices` equal slices, each
timed on its own, so every speed is a median with min and max of repeated runs in one invocation
(quality is scored on all queries together). The code verifiers (CodeT, MBR-exec, LEVER, ...) are
pickers of code pipelines and are measured in `benchmarks/end_to_end.py`.

    python benchmarks/rerank_verify.py [--queries 500] [--depth 20] [--model bench] [--slices 5]
                                       [--rerankers cross-encoder pointwise rankgpt first]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag.corpus import vital_articles
from rag.eval.datasets import known_items
from rag.eval.metrics import ranking_scores
from rag.eval.report import spread, write_results
from rag.recipes import document_chunks, hybrid_index
from rag.registry import build
from rag.types import Hit


def llm(args: argparse.Namespace) -> dict[str, Any]:
    """The generator of the LLM rerankers: one engine, shared through the registry."""
    return {"type": "vllm", "model": args.model, "max_model_len": 4096}


def rerankers(args: argparse.Namespace) -> dict[str, tuple[str, dict[str, Any]]]:
    generator = llm(args)
    return {
        "cross-encoder": (f"cross-encoder ({args.cross_encoder})",
                          {"type": "cross-encoder", "model": str(args.cross_encoder)}),
        "pointwise": (f"LLM pointwise P(Yes) ({args.model})",
                      {"type": "llm-pointwise", "max_words": 60, "generator": generator}),
        "rankgpt": (f"RankGPT window 20 step 10 ({args.model})",
                    {"type": "rankgpt", "window": 20, "step": 10, "generator": generator}),
        "first": (f"FIRST window 20 step 10 ({args.model})",
                  {"type": "first", "window": 20, "step": 10, "generator": generator}),
    }


def ranking_row(name: str, hits: list[list[Hit]], golds: list[str],
                slices: list[tuple[float, int]]) -> dict:
    """Quality over all queries; speed over all slices, and the median/min/max slice's."""
    scores = ranking_scores(hits, golds, depths=(1, 20))
    per_query = [seconds / count for seconds, count in slices]
    total = sum(seconds for seconds, _ in slices)
    return {"system": name, "queries": len(golds), "R@1": scores["R@1"], "nDCG@10": scores["nDCG@10"],
            "R@20": scores["R@20"], "s_per_query": round(total / len(golds), 3),
            **{f"s_per_query_{name}": value for name, value in spread(per_query).items()},
            "slices": len(slices)}


def timed_slices(run: Callable[[list[str], list[list[Hit]]], list[list[Hit]]], queries: list[str],
                 first: list[list[Hit]], slices: int) -> tuple[list[list[Hit]], list[tuple[float, int]]]:
    """`run` over `slices` equal slices of the queries, each timed on its own: (seconds, queries)."""
    size = -(-len(queries) // slices)
    hits: list[list[Hit]] = []
    timings: list[tuple[float, int]] = []
    for begin in range(0, len(queries), size):
        began = time.perf_counter()
        hits += run(queries[begin : begin + size], first[begin : begin + size])
        timings.append((time.perf_counter() - began, len(queries[begin : begin + size])))
    return hits, timings


def reranking(args: argparse.Namespace, save: Callable[[list[dict]], None]) -> list[dict]:
    """Rows for the first stage and each chosen reranker; `save` is called after every row."""
    test = known_items("test")[: args.queries]
    queries, golds = [q.query for q in test], [q.gold for q in test]
    hybrid = hybrid_index(document_chunks(vital_articles()), out=args.work / "vital-hybrid")
    first, seconds = timed_slices(lambda q, _: hybrid.search(q, k=args.depth), queries,
                                  [[] for _ in queries], args.slices)
    rows = [ranking_row("hybrid first stage", first, golds, seconds)]
    save(rows)
    chosen = rerankers(args)
    for key in args.rerankers:
        name, spec = chosen[key]
        reranker = build("reranker", spec)
        reranked, seconds = timed_slices(reranker.rerank, queries, first, args.slices)
        rows.append(ranking_row(name, reranked, golds, seconds))
        save(rows)
    return rows


def summary(rows: list[dict]) -> dict[str, Any]:
    """The headline figures issue #26 checks: the best reranker against the first stage."""
    first, *reranked = rows
    found: dict[str, Any] = {"first_stage_r1": first["R@1"], "rerank_queries": first["queries"]}
    if reranked:
        best = max(reranked, key=lambda r: r["R@1"])
        found |= {"best_reranker": best["system"], "best_reranker_r1": best["R@1"],
                  "best_reranker_s_per_query": best["s_per_query"]}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--depth", type=int, default=20, help="first-stage hits each reranker reorders")
    parser.add_argument("--slices", type=int, default=5,
                        help="equal slices of the queries, each timed on its own (median, min, max)")
    parser.add_argument("--model", default="bench", help="generator of the LLM rerankers")
    parser.add_argument("--cross-encoder", type=Path, default=Path(".cache/reranker"),
                        help="folder written by `rag train-reranker`")
    parser.add_argument("--rerankers", nargs="+", default=["cross-encoder", "pointwise", "rankgpt"],
                        choices=["cross-encoder", "pointwise", "rankgpt", "first"])
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-end-to-end"),
                        help="where the saved hybrid index lives (shared with end_to_end.py)")
    args = parser.parse_args()
    setup = {
        "corpus": "10,033 vital-article summaries, one chunk each",
        "queries": f"first {args.queries} known-item test queries (rag.eval.datasets.known_items)",
        "first_stage": f"hybrid convex, BM25 weight 0.3, top {args.depth}",
        "model": args.model, "passage_words": "60 per passage (LLM rerankers)",
        "dtype": build("generator", llm(args)).dtype,  # `auto` resolved; the engine starts later
    }

    def save(rows: list[dict]) -> None:
        """Write what is done so far, so a run cut short keeps its finished rows."""
        write_results("rerank_verify", setup, {"reranking": rows}, summary=summary(rows))

    reranking(args, save)


if __name__ == "__main__":
    main()
