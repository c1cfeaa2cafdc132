"""Ready-made pipelines and indexing, for the CLI, the examples and quick starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.chunkers import FixedTokenChunker
from rag.generators.stage import Generate
from rag.pipeline import Pipeline
from rag.prompts import ClosedBookPrompt, RagPrompt
from rag.retrievers import BM25Retriever, HNSWRetriever, HybridRetriever
from rag.retrievers.stage import Retrieve
from rag.types import Chunk, Document, SamplingParams


def document_chunks(docs: Sequence[Document]) -> list[Chunk]:
    """One chunk per document, for corpora of short documents (such as article summaries)."""
    return [Chunk(id=d.id, doc_id=d.id, text=d.text, start=0, end=len(d.text), title=d.title,
                  metadata=d.metadata) for d in docs]


def hybrid_index(
    chunks: Sequence[Chunk], bm25_weight: float = 0.3, progress: bool = True
) -> tuple[HNSWRetriever, BM25Retriever, HybridRetriever]:
    """Dense (MiniLM, HNSW) and BM25 indexes over the same chunks, and their convex fusion.

    The BM25 weight 0.3 is the one tuned on dev queries in benchmarks/retrieval.py.
    """
    dense, bm25 = HNSWRetriever(), BM25Retriever()
    dense.index(chunks, progress=progress)
    bm25.index(chunks)
    hybrid = HybridRetriever([bm25, dense], method="convex", weights=[bm25_weight, 1 - bm25_weight])
    return dense, bm25, hybrid


def index_corpus(
    docs: Sequence[Document], out: str | Path, chunk_size: int = 200, overlap: int = 0,
    encoder: str = "encoder", progress: bool = True,
) -> HNSWRetriever:
    """Chunk `docs` into encoder-token windows, embed them, and save an HNSW index to `out`."""
    encoder_spec = {"type": "sentence_transformers", "model": encoder}
    chunker = FixedTokenChunker(size=chunk_size, overlap=overlap, tokenizer=encoder)
    chunks = chunker.chunk_all(docs, progress=progress)
    retriever = HNSWRetriever(encoder=encoder_spec)
    retriever.index(chunks, progress=progress)
    retriever.save(out)
    return retriever


def naive_rag(
    index: str | Path | HNSWRetriever, generator: Any = None, k: int = 3, max_tokens: int = 128,
) -> Pipeline:
    """Retrieve k passages, number them in the prompt, generate an answer that cites them.

    k defaults to 3: the 135M default model loses track of the question among more passages.
    """
    retriever = index if isinstance(index, HNSWRetriever) else HNSWRetriever(path=str(index))
    return Pipeline([
        Retrieve(retriever, k=k),
        RagPrompt(),
        Generate(generator or {"type": "vllm", "model": "tiny"},
                 SamplingParams(max_tokens=max_tokens)),
    ])


def closed_book(generator: Any = None, max_tokens: int = 128) -> Pipeline:
    """The question alone: the baseline a RAG pipeline must beat."""
    return Pipeline([
        ClosedBookPrompt(),
        Generate(generator or {"type": "vllm", "model": "tiny"},
                 SamplingParams(max_tokens=max_tokens)),
    ])
