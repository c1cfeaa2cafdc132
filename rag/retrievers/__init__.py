"""Retrievers: find the chunks that answer a query."""

from rag.retrievers.base import Retriever
from rag.retrievers.hnsw import HNSWRetriever

__all__ = ["HNSWRetriever", "Retriever"]
