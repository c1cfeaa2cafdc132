"""Context-dependent known-item retrieval over sentence chunks: naive vs late vs situated.

Vital-article summaries split into sentences (pysbd). Query = the article's description, a hit
when any retrieved sentence belongs to the gold article (documents ranked by their best
sentence). Two settings: only the sentences after each article's first (the ones that say "It"
or "The film"), and every sentence. Embedding cost per 1,000 documents, as a ratio to naive,
measured in the same run. The LLM-situated variant runs on a slice (its cost is the generator).

    python benchmarks/chunking.py [--docs 10033] [--queries 2000] [--llm-docs 150]
"""

from __future__ import annotations

import argparse
import random
import time

from rag.chunkers import (
    ContextualRetrievalEmbedder,
    LateChunkingEmbedder,
    NaiveEmbedder,
    SentenceChunker,
    SituatedPrefixEmbedder,
    SituatedWindowEmbedder,
)
from rag.corpus import vital_articles
from rag.eval.metrics import mrr_at, recall_at
from rag.eval.report import write_results
from rag.registry import build
from rag.retrievers import BM25Retriever, HNSWRetriever

DEPTH = 100  # sentences retrieved per query before ranking documents by their best sentence


def doc_ranking(hits) -> list[str]:
    return list(dict.fromkeys(h.chunk.doc_id for h in hits))


def scores(results, golds) -> dict:
    ranked = [doc_ranking(hits) for hits in results]
    return {"R@1": round(recall_at(ranked, golds, 1), 4), "R@10": round(recall_at(ranked, golds, 10), 4),
            "MRR@10": round(mrr_at(ranked, golds, 10), 4)}


def run(docs, chunks, queries, embedders, encoder, label: str) -> list[dict]:
    golds = [g for _, g in queries]
    texts = [q for q, _ in queries]
    later_rows = [i for i, c in enumerate(chunks) if not c.id.endswith("#0")]
    rows = []
    for name, embedder in embedders.items():
        vectors = embedder.embed(docs, chunks, progress=True)
        for setting, keep in (("after first", later_rows), ("all", list(range(len(chunks))))):
            index = HNSWRetriever(encoder=encoder, exact=True)
            index.add_vectors([chunks[i] for i in keep], vectors[keep])
            rows.append({"corpus": label, "method": name, "indexed": setting, "sentences": len(keep),
                         **scores(index.search(texts, DEPTH), golds)})
    for setting, keep in (("after first", later_rows), ("all", list(range(len(chunks))))):
        subset = [chunks[i] for i in keep]
        bm25 = BM25Retriever()
        bm25.index([c.model_copy(update={"title": ""}) for c in subset])  # sentence text only
        rows.append({"corpus": label, "method": "BM25 (reference)", "indexed": setting,
                     "sentences": len(subset), **scores(bm25.search(texts, DEPTH), golds)})
    return rows


def costs(docs, chunks, embedders) -> list[dict]:
    """Embedding seconds per 1,000 documents with every cache off, as a ratio to naive."""
    ids = {d.id for d in docs}
    mine = [c for c in chunks if c.doc_id in ids]
    rows = []
    for name, embedder in embedders.items():
        embedder.embed(docs[:20], [c for c in mine if c.doc_id in {d.id for d in docs[:20]}])  # warm
        began = time.perf_counter()
        embedder.embed(docs, mine)
        rows.append({"method": name, "documents": len(docs), "sentences": len(mine),
                     "s_per_1000_docs": round(1000 * (time.perf_counter() - began) / len(docs), 1)})
    for row in rows:
        row["cost_vs_naive"] = round(row["s_per_1000_docs"] / rows[0]["s_per_1000_docs"], 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=10_033)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--llm-docs", type=int, default=150, help="0 skips the LLM variant")
    parser.add_argument("--cost-docs", type=int, default=1000)
    args = parser.parse_args()
    rng = random.Random(0)
    docs = vital_articles()
    docs = rng.sample(docs, args.docs) if args.docs < len(docs) else docs
    chunker = SentenceChunker()
    chunks = chunker.chunk_all(docs, progress=True)
    multi = {c.doc_id for c in chunks if not c.id.endswith("#0")}  # articles with 2+ sentences
    pairs = [(d.metadata["description"], d.id) for d in docs
             if d.metadata["description"] and d.id in multi]
    queries = rng.sample(pairs, min(args.queries, len(pairs)))
    encoder = build("encoder", {"type": "sentence_transformers"})
    embedders = {
        "naive (sentence alone)": NaiveEmbedder(encoder),
        "late chunking": LateChunkingEmbedder(encoder),
        "situated: window (+/-400 chars, 0.5 residual)": SituatedWindowEmbedder(encoder),
        "situated: title + first sentence prefix": SituatedPrefixEmbedder(encoder),
    }
    rows = run(docs, chunks, queries, embedders, encoder, f"{len(docs)} articles")
    if args.llm_docs:
        slice_docs = docs[: args.llm_docs]
        ids = {d.id for d in slice_docs}
        slice_chunks = [c for c in chunks if c.doc_id in ids]
        slice_queries = [(q, g) for q, g in pairs if g in ids]
        llm = ContextualRetrievalEmbedder({"type": "vllm", "model": "tiny"}, encoder)
        rows += run(slice_docs, slice_chunks, slice_queries, {
            "naive (sentence alone)": NaiveEmbedder(encoder),
            "late chunking": LateChunkingEmbedder(encoder),
            "situated: LLM context (tiny)": llm,
        }, encoder, f"{len(slice_docs)}-article slice")
    cold = build("encoder", {"type": "sentence_transformers", "cache": False})
    cost_rows = costs(docs[: args.cost_docs], chunks, {
        "naive (sentence alone)": NaiveEmbedder(cold),
        "late chunking": LateChunkingEmbedder(cold),
        "situated: window": SituatedWindowEmbedder(cold),
        "situated: prefix": SituatedPrefixEmbedder(cold),
    })
    if args.llm_docs:
        llm_cold = ContextualRetrievalEmbedder({"type": "vllm", "model": "tiny"}, cold, cache=False)
        cost_rows += costs(docs[:50], chunks, {"naive (sentence alone)": NaiveEmbedder(cold),
                                               "situated: LLM context (tiny)": llm_cold})
    write_results("chunking", {
        "corpus": f"{len(docs)} vital-article summaries (seed 0) split into sentences by pysbd",
        "queries": f"{len(queries)} descriptions of articles with 2+ sentences (seed 0)",
        "encoder": "all-MiniLM-L6-v2", "search": f"exact, top {DEPTH} sentences, ranked by document",
        "llm_slice": f"first {args.llm_docs} sampled articles, the tiny generator, 48 tokens",
        "cost": f"embedding seconds per 1,000 documents on the first {args.cost_docs} articles "
                "(LLM: 50 articles, generation included), every cache off, same run",
    }, {"retrieval": rows, "cost": cost_rows})


if __name__ == "__main__":
    main()
