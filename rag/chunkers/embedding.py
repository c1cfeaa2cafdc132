"""Chunk embedders: how a chunk becomes a vector, possibly reading its document around it.

Every method returns one L2-normalized vector per chunk, in order, from the same encoder, so all
of them index into any dense retriever; the index records the method's spec (`vectors_by`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rag.encoders.dense import SentenceTransformerEncoder
from rag.errors import RagError
from rag.registry import Component, ComponentConfig, build, register
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


class ChunkEmbedder(Component):
    """Base: `embed(docs, chunks)` -> (len(chunks), dim) unit vectors."""

    kind = "embedder"
    nested = ("encoder",)

    def __init__(self, encoder: SentenceTransformerEncoder | dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        self.encoder: SentenceTransformerEncoder = build("encoder", encoder or DEFAULT_ENCODER)
        super().__init__(encoder={"type": self.encoder.name}, **kwargs)

    def embed(self, docs: Sequence[Document], chunks: Sequence[Chunk],
              progress: bool = False) -> np.ndarray:
        raise NotImplementedError


@register("embedder", "naive")
class NaiveEmbedder(ChunkEmbedder):
    """Each chunk's own text, alone: the baseline every contextual method is measured against."""

    class Config(ComponentConfig):
        encoder: dict[str, Any]
        title: bool = False

    config: Config

    def embed(self, docs: Sequence[Document], chunks: Sequence[Chunk],
              progress: bool = False) -> np.ndarray:
        texts = [f"{c.title}\n{c.text}" if self.config.title and c.title else c.text for c in chunks]
        return self.encoder.encode_documents(texts, progress)
