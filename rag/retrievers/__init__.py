"""Retrievers: find the chunks that answer a query (dense HNSW, BM25, hybrid fusion, HyDE)."""

from rag.retrievers.base import Retriever, matches
from rag.retrievers.bm25 import BM25Retriever
from rag.retrievers.fusion import HybridRetriever, convex, rrf
from rag.retrievers.hnsw import HNSWRetriever
from rag.retrievers.hyde import HyDERetriever

__all__ = [
    "BM25Retriever",
    "HNSWRetriever",
    "HyDERetriever",
    "HybridRetriever",
    "Retriever",
    "convex",
    "matches",
    "rrf",
]
