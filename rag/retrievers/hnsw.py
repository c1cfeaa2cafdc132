"""Dense retrieval over an hnswlib HNSW graph.

An index folder holds `manifest.json` (format, encoder spec and fingerprint, sizes), the chunks
as JSON lines, and hnswlib's own binary file; nothing is pickled. Loading checks the manifest and
the file sizes before hnswlib reads a byte, so a truncated or foreign folder fails with an error
that names the file rather than crashing inside C++.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from rag.encoders.dense import Encoder
from rag.errors import EncoderMismatchError, IndexLoadError, RagError
from rag.registry import ComponentConfig, build, register
from rag.retrievers.base import (
    CHUNKS,
    Retriever,
    load_chunks,
    read_manifest,
    save_chunks,
    write_manifest,
)
from rag.storage import atomic_path, checked_load
from rag.types import Chunk, Hit

FORMAT = "rag-icl/hnsw-v1"
GRAPH = "hnsw.bin"
DEFAULT_ENCODER = {"type": "sentence_transformers"}


@register("retriever", "hnsw")
class HNSWRetriever(Retriever):
    """Approximate nearest neighbours by cosine or inner product, via hnswlib."""

    class Config(ComponentConfig):
        path: str | None = Field(default=None, description="index folder to load; None: empty")
        encoder: dict[str, Any] | None = Field(
            default=None, description="encoder spec; None: the one the index was built with"
        )
        space: Literal["cosine", "ip"] = "cosine"
        M: int = Field(default=16, ge=2, description="graph degree")
        ef_construction: int = Field(default=200, ge=1)
        ef_search: int = Field(default=64, ge=1, description="raised to k when k is larger")

    config: Config

    def __init__(self, encoder: Encoder | dict[str, Any] | None = None, **kwargs: Any) -> None:
        manifest = read_manifest(kwargs["path"], FORMAT) if kwargs.get("path") else None
        if manifest is not None:
            kwargs.setdefault("space", manifest["space"])
        chosen = encoder if encoder is not None else (manifest or {}).get("encoder", DEFAULT_ENCODER)
        self.encoder: Encoder = build("encoder", chosen)
        super().__init__(encoder=self.encoder.spec(), **kwargs)
        self.chunks: list[Chunk] = []
        self._graph: Any = None
        self._unsaved = False
        if manifest is not None:
            self._load(Path(kwargs["path"]), manifest)

    def _load(self, folder: Path, manifest: dict[str, Any]) -> None:
        if manifest["encoder_fingerprint"] != self.encoder.fingerprint:
            raise EncoderMismatchError(
                f"{folder} was built with encoder {manifest['encoder']} but this retriever "
                f"encodes queries with {self.encoder.spec()}; vectors would not be comparable"
            )
        if manifest["space"] != self.config.space:
            raise EncoderMismatchError(
                f"{folder} uses space {manifest['space']!r}, not {self.config.space!r}"
            )
        graph_path = folder / GRAPH
        if not graph_path.is_file() or graph_path.stat().st_size != manifest["graph_bytes"]:
            raise IndexLoadError(f"{graph_path} is missing or truncated (size differs from manifest)")
        self.chunks = load_chunks(folder / CHUNKS, manifest["count"])
        graph = self._new_graph(manifest["dim"])
        checked_load(graph_path, "hnswlib index",
                     lambda p: graph.load_index(str(p), max_elements=max(manifest["count"], 1)))
        if graph.get_current_count() != manifest["count"]:
            raise IndexLoadError(f"{graph_path} holds {graph.get_current_count()} vectors, "
                                 f"manifest says {manifest['count']}")
        self._graph = graph

    def _new_graph(self, dim: int) -> Any:
        import hnswlib

        return hnswlib.Index(space=self.config.space, dim=dim)

    @cached_property
    def dim(self) -> int:
        return self.encoder.dim

    def __len__(self) -> int:
        return len(self.chunks)

    def index(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        self.chunks, self._graph = [], None
        self.add(chunks, progress)

    def add(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        chunks = list(chunks)
        if not chunks:
            return
        vectors = self.encoder.encode_documents([embed_text(c) for c in chunks], progress=progress)
        self.add_vectors(chunks, vectors)

    def add_vectors(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Add chunks whose vectors were computed elsewhere (late chunking, situated, ...)."""
        if vectors.shape != (len(chunks), self.dim):
            raise RagError(f"expected vectors of shape {(len(chunks), self.dim)}, got {vectors.shape}")
        if self._graph is None:
            self._graph = self._new_graph(self.dim)
            self._graph.init_index(max_elements=len(chunks), ef_construction=self.config.ef_construction,
                                   M=self.config.M)
        needed = len(self.chunks) + len(chunks)
        if needed > self._graph.get_max_elements():
            self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
        labels = np.arange(len(self.chunks), needed)
        self._graph.add_items(vectors, labels)
        self.chunks.extend(chunks)
        self._unsaved = True

    def spec(self) -> dict[str, Any]:
        if self._unsaved:
            raise RagError("this index has unsaved chunks: save() it before serializing its spec")
        return super().spec()

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        if k < 1:
            raise RagError(f"k must be at least 1, got {k}")
        if not self.chunks:
            return [[] for _ in queries]
        vectors = self.encoder.encode_queries(list(queries))
        k = min(k, len(self.chunks))
        self._graph.set_ef(max(self.config.ef_search, k))
        labels, distances = self._graph.knn_query(vectors, k=k)
        return [
            [Hit(chunk=self.chunks[int(i)], score=float(1.0 - d), retriever=self.name)
             for i, d in zip(row_labels, row_distances)]
            for row_labels, row_distances in zip(labels, distances)
        ]

    def save(self, path: str | Path) -> None:
        if self._graph is None:
            raise RagError("nothing to save: the index is empty")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_chunks(folder / CHUNKS, self.chunks)
        with atomic_path(folder / GRAPH) as tmp:
            self._graph.save_index(str(tmp))
        write_manifest(folder, FORMAT, {
            "encoder": self.encoder.spec(), "encoder_fingerprint": self.encoder.fingerprint,
            "space": self.config.space, "dim": self.dim, "count": len(self.chunks),
            "graph_bytes": (folder / GRAPH).stat().st_size,
        })
        self.config.path = str(folder)
        self._unsaved = False

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> HNSWRetriever:
        return cls(path=str(path), **kwargs)


def embed_text(chunk: Chunk) -> str:
    """The text a chunk is embedded as: its title (when it has one) gives the passage context."""
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text
