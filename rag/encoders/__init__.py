"""Encoders: text to dense vectors (sentence-transformers) or sparse term weights (SPLADE)."""

from rag.encoders.dense import Encoder, SentenceTransformerEncoder
from rag.encoders.sparse import SpladeEncoder

__all__ = ["Encoder", "SentenceTransformerEncoder", "SpladeEncoder"]
