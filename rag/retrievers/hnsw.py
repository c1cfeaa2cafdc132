"""Dense retrieval over an hnswlib HNSW graph, with an exact (brute-force) reference mode.

An index folder holds `manifest.json` (format, encoder spec and fingerprint, sizes, deleted
labels), the chunks as JSON lines, the vectors as `.npy`, and hnswlib's own binary file;
nothing is pickled. Loading checks the manifest and
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

from rag.chunkers.embedding import ChunkEmbedder
from rag.encoders.dense import Encoder, index_encoder
from rag.errors import EncoderMismatchError, IndexLoadError, RagError
from rag.registry import ComponentConfig, register
from rag.retrievers.base import (
    CHUNKS,
    Filter,
    Retriever,
    check_deletable,
    check_index_encoder,
    check_k,
    check_new_ids,
    embed_text,
    load_chunks,
    read_manifest,
    save_chunks,
    write_manifest,
)
from rag.retrievers.filters import ExactBelow, select
from rag.storage import atomic_path, atomic_save_npy, checked_load, load_npy
from rag.types import Chunk, Document, Hit

FORMAT = "rag-icl/hnsw-v1"
GRAPH = "hnsw.bin"
VECTORS = "vectors.npy"
DEFAULT_ENCODER = {"type": "sentence_transformers"}


def exact_top_k(
    queries: np.ndarray, stored: np.ndarray, k: int, space: str
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k rows of `stored` per query by cosine or inner product, best first:
    positions and similarities."""
    stored, queries = np.asarray(stored, dtype=np.float32), np.asarray(queries, dtype=np.float32)
    if space == "cosine":
        stored = stored / np.linalg.norm(stored, axis=1, keepdims=True).clip(1e-12)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(1e-12)
    sims = queries @ stored.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
    top = np.take_along_axis(top, order, axis=1)
    return top, np.take_along_axis(sims, top, axis=1)


@register("retriever", "hnsw")
class HNSWRetriever(Retriever):
    """Approximate nearest neighbours by cosine or inner product, via hnswlib."""

    format = FORMAT
    nested = {"encoder": "encoder"}

    class Config(ComponentConfig):
        path: str | None = Field(default=None, description="index folder to load; None: empty")
        encoder: dict[str, Any] | None = Field(
            default=None, description="encoder spec; None: the one the index was built with"
        )
        space: Literal["cosine", "ip"] = "cosine"
        M: int = Field(default=16, ge=2, description="graph degree")
        ef_construction: int = Field(default=200, ge=1)
        ef_search: int = Field(default=64, ge=1, description="raised to k when k is larger")
        exact: bool = Field(default=False, description="brute-force search: the reference")
        exact_below: ExactBelow = 0.01

    config: Config
    encoder: Encoder

    def __init__(self, encoder: Encoder | dict[str, Any] | None = None, **kwargs: Any) -> None:
        manifest = read_manifest(kwargs["path"], FORMAT) if kwargs.get("path") else None
        if manifest is not None:
            kwargs.setdefault("space", manifest["space"])
        if manifest is not None:
            chosen = index_encoder(encoder, manifest["encoder"])
        else:
            chosen = encoder if encoder is not None else DEFAULT_ENCODER
        super().__init__(encoder=chosen, **kwargs)
        self.chunks: list[Chunk] = []  # by hnswlib label; deleted ones stay, marked
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self._labels: dict[str, int] = {}
        self.vectors_by: dict[str, Any] | None = None  # the chunk embedder's spec, if not plain
        self._deleted: set[int] = set()
        self._graph: Any = None
        if manifest is not None:
            self._load(Path(kwargs["path"]), manifest)

    def _load(self, folder: Path, manifest: dict[str, Any]) -> None:
        check_index_encoder(folder, manifest, self.encoder)
        if manifest["space"] != self.config.space:
            raise EncoderMismatchError(
                f"{folder} uses space {manifest['space']!r}, not {self.config.space!r}"
            )
        graph_path = folder / GRAPH
        if not graph_path.is_file() or graph_path.stat().st_size != manifest["graph_bytes"]:
            raise IndexLoadError(f"{graph_path} is missing or truncated (size differs from manifest)")
        self.chunks = load_chunks(folder / CHUNKS, manifest["count"])
        # memory-mapped: the graph holds its own copy; these pages are read only by exact search
        self.vectors = load_npy(folder / VECTORS, "vector file", mmap=True)
        if self.vectors.shape != (manifest["count"], manifest["dim"]):
            raise IndexLoadError(f"{folder / VECTORS} has shape {self.vectors.shape}, manifest "
                                 f"says {(manifest['count'], manifest['dim'])}")
        self._labels = {c.id: i for i, c in enumerate(self.chunks)}
        self._deleted = set(manifest["deleted"])
        self.vectors_by = manifest.get("vectors_by")
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
        return len(self.chunks) - len(self._deleted)

    def index(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        self.chunks, self._labels, self._deleted, self._graph = [], {}, set(), None
        self.vectors_by = None
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.add(chunks, progress)

    def add(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        chunks = list(chunks)
        if not chunks:
            return
        vectors = self.encoder.encode_documents([embed_text(c) for c in chunks], progress=progress)
        self.add_vectors(chunks, vectors)

    def add_embedded(self, docs: Sequence[Document], chunks: Sequence[Chunk],
                     embedder: ChunkEmbedder, progress: bool = False) -> None:
        """Add chunks embedded in their documents' context (late chunking, situated, ...)."""
        if embedder.encoder.fingerprint != self.encoder.fingerprint:
            raise EncoderMismatchError(
                f"the embedder encodes with {embedder.encoder.pinned_spec()} but this index queries "
                f"with {self.encoder.pinned_spec()}; vectors would not be comparable")
        if self.vectors_by not in (None, embedder.spec()) or (self.chunks and self.vectors_by is None):
            raise RagError("an index holds vectors of one method; build a new one for "
                           f"{embedder.name!r}")
        self.add_vectors(list(chunks), embedder.embed(docs, chunks, progress))
        self.vectors_by = embedder.spec()

    def add_vectors(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Add chunks whose vectors were computed elsewhere (late chunking, situated, ...)."""
        if vectors.shape != (len(chunks), self.dim):
            raise RagError(f"expected vectors of shape {(len(chunks), self.dim)}, got {vectors.shape}")
        # a deleted chunk's id may come back (a changed document's chunks keep their ids)
        check_new_ids({i for i, label in self._labels.items() if label not in self._deleted},
                      chunks)
        vectors = np.asarray(vectors, dtype=np.float32)
        if self._graph is None:
            self._graph = self._new_graph(self.dim)
            self._graph.init_index(max_elements=len(chunks), ef_construction=self.config.ef_construction,
                                   M=self.config.M)
        needed = len(self.chunks) + len(chunks)
        if needed > self._graph.get_max_elements():
            self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
        labels = np.arange(len(self.chunks), needed)
        self._graph.add_items(vectors, labels)
        self._labels.update({c.id: int(i) for c, i in zip(chunks, labels)})
        self.chunks.extend(chunks)
        self.vectors = vectors if not len(self.vectors) else np.vstack([self.vectors, vectors])
        self._unsaved = True

    def delete(self, ids: Sequence[str]) -> None:
        check_deletable({i for i in ids if i in self._labels and self._labels[i] not in self._deleted},
                        ids)
        for chunk_id in ids:
            label = self._labels[chunk_id]
            self._graph.mark_deleted(label)
            self._deleted.add(label)
        self._unsaved = True

    def search(
        self, queries: Sequence[str], k: int = 10, filter: Filter | None = None
    ) -> list[list[Hit]]:
        check_k(k)
        return self.search_vectors(self.encoder.encode_queries(list(queries)), k, filter)

    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, filter: Filter | None = None
    ) -> list[list[Hit]]:
        """Nearest chunks to query vectors made by this index's encoder (HyDE uses this)."""
        check_k(k)
        allowed = self._allowed(filter)
        live = len(allowed) if allowed is not None else len(self)
        if live == 0:
            return [[] for _ in range(len(vectors))]
        k = min(k, live)
        # A graph walk through few matches visits most of the graph and may find fewer than k:
        # below `exact_below` of the chunks, exact search over the matches is cheaper and exact
        # (as Qdrant and Milvus switch).
        exact = self.config.exact or (
            allowed is not None and live < self.config.exact_below * len(self))
        if not exact:
            self._graph.set_ef(max(self.config.ef_search, k))
            # hnswlib applies the filter inside the graph walk, so k matches come back when k
            # exist; the callback runs once per visited node (single-threaded when set).
            keep = set(allowed) if allowed is not None else None
            try:
                labels, distances = self._graph.knn_query(
                    vectors, k=k, filter=None if keep is None else keep.__contains__)
                scores = 1.0 - distances
            except RuntimeError:  # hnswlib found fewer than k matches in the graph
                if allowed is None:
                    raise
                exact = True
        if exact:
            labels, scores = self._exact(vectors, k, allowed)
        return [
            [Hit(chunk=self.chunks[int(i)], score=float(s), retriever=self.name)
             for i, s in zip(row_labels, row_scores)]
            for row_labels, row_scores in zip(labels, scores)
        ]

    def _allowed(self, filter: Filter | None) -> list[int] | None:
        """The labels of the live chunks a filter keeps (None: no filter)."""
        if filter is None:
            return None
        live = [i for i in range(len(self.chunks)) if i not in self._deleted]
        keep = select([self.chunks[i] for i in live], filter)
        return None if keep is None else [i for i, ok in zip(live, keep) if ok]

    def _exact(
        self, vectors: np.ndarray, k: int, allowed: list[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k by the index's own similarity."""
        candidates = np.array(allowed if allowed is not None else
                              [i for i in range(len(self.chunks)) if i not in self._deleted])
        top, sims = exact_top_k(vectors, self.vectors[candidates], k, self.config.space)
        return candidates[top], sims

    def save(self, path: str | Path) -> None:
        if self._graph is None:
            raise RagError("nothing to save: the index is empty")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_chunks(folder / CHUNKS, self.chunks)
        atomic_save_npy(folder / VECTORS, self.vectors)
        with atomic_path(folder / GRAPH) as tmp:
            self._graph.save_index(str(tmp))
        write_manifest(folder, FORMAT, {
            "encoder": self.encoder.pinned_spec(), "encoder_fingerprint": self.encoder.fingerprint,
            "space": self.config.space, "dim": self.dim, "count": len(self.chunks),
            "deleted": sorted(self._deleted), "vectors_by": self.vectors_by, "graph_bytes": (folder / GRAPH).stat().st_size,
        })
        self.config.path = str(folder)
        self._unsaved = False
