"""Scaling out: a vector database beside hnswlib on the same vectors (issue #23, first part).

The known-item benchmark (`rag.eval.datasets.known_items("test")`: 2,000 Wikidata descriptions
whose gold is their vital article) over all 10,033 vital articles, one chunk each, through
hnswlib and through Milvus (embedded `milvus-lite`, HNSW with the same M, efConstruction and ef)
holding the very vectors of the saved hybrid index's HNSW half: recall, MRR and nDCG at 10, and
milliseconds per query (one query at a time, median of `--repeat` runs, min and max). Query
vectors are encoded once, so both times are search alone.

The Ray parts of the issue (Ray Data indexing and evaluation, Ray Serve replicas) are not built
yet; their summary keys are absent until they are.

    python benchmarks/scale.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag.corpus import vital_articles
from rag.eval.datasets import known_items
from rag.eval.metrics import ranking_scores
from rag.eval.report import write_results
from rag.recipes import document_chunks, hybrid_index
from rag.retrievers import HNSWRetriever, MilvusRetriever
from rag.types import Hit, KnownItem

RESULTS = Path(__file__).resolve().parent / "results"


def timed_search(retriever: HNSWRetriever | MilvusRetriever, vectors: np.ndarray, repeat: int,
                 ) -> tuple[list[list[Hit]], list[float]]:
    """Hits for every query vector, one at a time, and milliseconds per query of each run."""
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        hits = [retriever.search_vectors(v[None, :], k=10)[0] for v in vectors]
        runs.append(1000 * (time.perf_counter() - began) / len(vectors))
    return hits, runs


def row(name: str, hits: list[list[Hit]], items: list[KnownItem], runs: list[float]) -> dict[str, Any]:
    return {"system": name, "queries": len(items), **ranking_scores(hits, [i.gold for i in items]),
            "ms_per_query": round(statistics.median(runs), 3), "ms min": round(min(runs), 3),
            "ms max": round(max(runs), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-end-to-end"),
                        help="where the saved hybrid index lives (built if missing)")
    args = parser.parse_args()
    hnsw: HNSWRetriever = hybrid_index(document_chunks(vital_articles()),
                                       out=args.work / "vital-hybrid").retrievers[1]
    items = known_items("test")
    queries = hnsw.encoder.encode_queries([i.query for i in items], progress=True)
    milvus = MilvusRetriever(encoder=hnsw.encoder, space=hnsw.config.space, M=hnsw.config.M,
                             ef_construction=hnsw.config.ef_construction,
                             ef_search=hnsw.config.ef_search)
    began = time.perf_counter()
    milvus.add_vectors(hnsw.chunks, np.asarray(hnsw.vectors))
    with tempfile.TemporaryDirectory() as scratch:
        milvus.save(Path(scratch) / "milvus")
        load_seconds = time.perf_counter() - began
        results = {name: timed_search(r, queries, args.repeat)
                   for name, r in (("hnswlib", hnsw), ("milvus-lite", milvus))}
    rows = [row(name, hits, items, runs) for name, (hits, runs) in results.items()]
    by = {r["system"]: r for r in rows}
    summary = {"vectordb": "milvus-lite (pymilvus MilvusClient, embedded)",
               "vectordb_recall_at_10": by["milvus-lite"]["R@10"],
               "hnswlib_recall_at_10": by["hnswlib"]["R@10"],
               "vectordb_ms_per_query": by["milvus-lite"]["ms_per_query"],
               "hnswlib_ms_per_query": by["hnswlib"]["ms_per_query"]}
    write_results("scale", {
        "corpus": f"{len(hnsw.chunks)} vital articles, one chunk each (the saved hybrid's HNSW vectors)",
        "queries": "known_items('test'): 2,000 descriptions, gold = their article",
        "index": f"HNSW M={hnsw.config.M}, efConstruction={hnsw.config.ef_construction}, "
                 f"ef={hnsw.config.ef_search}, {hnsw.config.space}",
        "encoder": hnsw.encoder.pinned_spec(), "repeat": args.repeat,
        "milvus_insert_and_save_s": round(load_seconds, 1),
    }, {"vector_database": rows}, summary=summary)


if __name__ == "__main__":
    main()
