"""Chunk embedders: how a chunk becomes a vector, possibly reading its document around it.

Every method returns one L2-normalized vector per chunk, in order, from the same encoder, so all
of them index into any dense retriever; the index records the method's spec (`vectors_by`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from rag.encoders.dense import SentenceTransformerEncoder
from rag.errors import RagError
from rag.registry import Component, ComponentConfig, register
from rag.types import Chunk, Document

DEFAULT_ENCODER = {"type": "sentence_transformers"}


def normalize(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True).clip(1e-12)).astype(np.float32)


def by_document(docs: Sequence[Document], chunks: Sequence[Chunk]) -> dict[str, Document]:
    """The parent of every chunk, refusing chunks whose document is not given."""
    parents = {d.id: d for d in docs}
    missing = sorted({c.doc_id for c in chunks} - parents.keys())
    if missing:
        raise RagError(f"chunks refer to documents that were not given: {missing[:5]}")
    return parents


class EmbedderConfig(ComponentConfig):
    encoder: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_ENCODER))


class ChunkEmbedder(Component):
    """Base: `embed(docs, chunks)` -> (len(chunks), dim) unit vectors."""

    kind = "embedder"
    nested = {"encoder": "encoder"}
    encoder: SentenceTransformerEncoder

    def embed(self, docs: Sequence[Document], chunks: Sequence[Chunk],
              progress: bool = False) -> np.ndarray:
        raise NotImplementedError


@register("embedder", "naive")
class NaiveEmbedder(ChunkEmbedder):
    """Each chunk's own text, alone: the baseline every contextual method is measured against."""

    class Config(EmbedderConfig):
        title: bool = False

    config: Config

    def embed(self, docs: Sequence[Document], chunks: Sequence[Chunk],
              progress: bool = False) -> np.ndarray:
        texts = [f"{c.title}\n{c.text}" if self.config.title and c.title else c.text for c in chunks]
        return self.encoder.encode_documents(texts, progress)
