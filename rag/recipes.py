"""Ready-made pipelines and indexing, for the CLI, the examples and quick starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.chunkers import FixedTokenChunker
from rag.generators.stage import Generate
from rag.pipeline import Pipeline
from rag.prompts import ClosedBookPrompt, RagPrompt
from rag.retrievers import HNSWRetriever
from rag.retrievers.stage import Retrieve
from rag.types import Document, SamplingParams


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
