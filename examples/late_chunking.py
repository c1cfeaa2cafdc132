"""Late chunking vs naive sentence embeddings, then hybrid BM25 + dense retrieval.

Index only the sentences after each article's first (they say "It" or "The film"), query with
the articles' descriptions, and count how often a sentence of the right article comes back.

    python examples/late_chunking.py          # 2,000 articles
    RAG_EXAMPLE_DOCS=400 python examples/late_chunking.py
"""

import os

from rag.chunkers import LateChunkingEmbedder, NaiveEmbedder, SentenceChunker
from rag.corpus import vital_articles
from rag.retrievers import BM25Retriever, HNSWRetriever, HybridRetriever


def main() -> None:
    docs = vital_articles()[: int(os.environ.get("RAG_EXAMPLE_DOCS", "2000"))]
    chunks = SentenceChunker().chunk_all(docs)
    later = [i for i, c in enumerate(chunks) if not c.id.endswith("#0")]
    golds = sorted({chunks[i].doc_id for i in later})
    by_id = {d.id: d for d in docs}
    queries = [by_id[g].metadata["description"] or g for g in golds]
    for embedder in (NaiveEmbedder(), LateChunkingEmbedder()):
        index = HNSWRetriever()  # every sentence embedded in context, the later ones indexed
        index.add_vectors([chunks[i] for i in later], embedder.embed(docs, chunks)[later])
        found = [g in {h.chunk.doc_id for h in hits}
                 for g, hits in zip(golds, index.search(queries, k=10))]
        print(f"{embedder.name:>5}: recall@10 {sum(found) / len(found):.3f} on {len(found)} queries")
    dense, bm25 = HNSWRetriever(), BM25Retriever()
    dense.index(chunks)
    bm25.index(chunks)
    hybrid = HybridRetriever([bm25, dense], method="rrf")
    hits = hybrid.search(["1968 film by Stanley Kubrick"], k=3, filter={"topic": "Arts"})[0]
    print("hybrid:", [h.chunk.doc_id for h in hits])


if __name__ == "__main__":
    main()
