"""Encoders: text to vectors for dense retrieval."""

from rag.encoders.dense import Encoder, SentenceTransformerEncoder

__all__ = ["Encoder", "SentenceTransformerEncoder"]
