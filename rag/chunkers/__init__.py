"""Chunkers: split documents into `Chunk`s that keep their exact character spans."""

from rag.chunkers.base import Chunker
from rag.chunkers.fixed import FixedTokenChunker

__all__ = ["Chunker", "FixedTokenChunker"]
