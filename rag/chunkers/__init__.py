"""Chunkers split documents into `Chunk`s with exact character spans; chunk embedders turn
chunks into vectors, alone (naive) or reading their document (late chunking, situated)."""

from rag.chunkers.base import Chunker
from rag.chunkers.code import PythonChunker
from rag.chunkers.embedding import ChunkEmbedder, NaiveEmbedder
from rag.chunkers.fixed import FixedTokenChunker
from rag.chunkers.late import LateChunkingEmbedder
from rag.chunkers.recursive import RecursiveChunker
from rag.chunkers.sentence import SentenceChunker
from rag.chunkers.situated import (
    ContextualRetrievalEmbedder,
    SituatedPrefixEmbedder,
    SituatedWindowEmbedder,
)

__all__ = [
    "ChunkEmbedder",
    "Chunker",
    "ContextualRetrievalEmbedder",
    "FixedTokenChunker",
    "LateChunkingEmbedder",
    "NaiveEmbedder",
    "PythonChunker",
    "RecursiveChunker",
    "SentenceChunker",
    "SituatedPrefixEmbedder",
    "SituatedWindowEmbedder",
]
