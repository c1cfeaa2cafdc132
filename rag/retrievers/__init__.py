"""Retrievers: find the chunks that answer a query (HNSW, Milvus, BM25, SPLADE, hybrid fusion, HyDE)."""

from rag.retrievers.base import Retriever, open_index
from rag.retrievers.filters import FilterError, MetadataFilter, matches, parse_filter
from rag.retrievers.bm25 import BM25Retriever
from rag.retrievers.documents import Changes, DocumentIndex
from rag.retrievers.fusion import HybridRetriever, convex, rrf
from rag.retrievers.hnsw import HNSWRetriever
from rag.retrievers.hyde import HyDERetriever
from rag.retrievers.milvus import MilvusRetriever
from rag.retrievers.sparse import SparseRetriever

__all__ = [
    "BM25Retriever",
    "Changes",
    "DocumentIndex",
    "FilterError",
    "HNSWRetriever",
    "HyDERetriever",
    "MetadataFilter",
    "MilvusRetriever",
    "HybridRetriever",
    "Retriever",
    "SparseRetriever",
    "convex",
    "matches",
    "open_index",
    "parse_filter",
    "rrf",
]
