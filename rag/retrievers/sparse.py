"""Learned sparse retrieval: SPLADE term weights in an inverted index (a scipy CSC matrix).

The document-term matrix is kept column-major, so each column is one term's posting list and a
query touches only the posting lists of its own nonzero terms: score(d) = sum over the query's
terms j of w_j(q) * w_j(d). Saved with `scipy.sparse.save_npz` (no pickle).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from rag.encoders.dense import index_encoder
from rag.encoders.sparse import SpladeEncoder
from rag.errors import RagError
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
from rag.retrievers.filters import select
from rag.storage import atomic_path, checked_load
from rag.types import Chunk, Hit

FORMAT = "rag-icl/splade-v1"
POSTINGS = "postings.npz"


@register("retriever", "splade")
class SparseRetriever(Retriever):
    """Top-k by sparse dot product between SPLADE query and document vectors."""

    format = FORMAT

    nested = {"encoder": "encoder"}

    class Config(ComponentConfig):
        path: str | None = Field(default=None, description="index folder to load; None: empty")
        encoder: dict[str, Any] | None = Field(
            default=None, description="splade encoder spec; None: the one the index was built with"
        )

    config: Config
    encoder: SpladeEncoder

    def __init__(self, encoder: SpladeEncoder | dict[str, Any] | None = None, **kwargs: Any) -> None:
        manifest = read_manifest(kwargs["path"], FORMAT) if kwargs.get("path") else None
        chosen = encoder if manifest is None else index_encoder(encoder, manifest["encoder"])
        if chosen is None:
            raise RagError("a splade retriever needs an encoder, e.g. "
                           "{'type': 'splade', 'model': 'naver/splade-v3'}")
        super().__init__(encoder=chosen, **kwargs)
        self.chunks: list[Chunk] = []
        self.postings = sp.csc_matrix((0, 0), dtype=np.float32)
        if manifest is not None:
            check_index_encoder(kwargs["path"], manifest, self.encoder)
            folder = Path(kwargs["path"])
            self.chunks = load_chunks(folder / CHUNKS, manifest["count"])
            self.postings = checked_load(folder / POSTINGS, "sparse postings",
                                         lambda p: sp.load_npz(p).tocsc())
            if self.postings.shape[0] != len(self.chunks):
                raise RagError(f"{folder / POSTINGS} has {self.postings.shape[0]} rows for "
                               f"{len(self.chunks)} chunks")

    def __len__(self) -> int:
        return len(self.chunks)

    def index(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        self.chunks, self.postings = [], sp.csc_matrix((0, 0), dtype=np.float32)
        self.add(chunks, progress)

    def add(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        check_new_ids({c.id for c in self.chunks}, chunks)
        weights = self.encoder.encode_documents([embed_text(c) for c in chunks], progress)
        blocks = [self.postings, weights] if self.chunks else [weights]
        self.postings = sp.vstack(blocks, format="csc")
        self.chunks.extend(chunks)
        self._unsaved = True

    def delete(self, ids: Sequence[str]) -> None:
        check_deletable({c.id for c in self.chunks}, ids)
        gone = set(ids)
        keep = [i for i, c in enumerate(self.chunks) if c.id not in gone]
        self.postings = self.postings.tocsr()[keep].tocsc()
        self.chunks = [self.chunks[i] for i in keep]
        self._unsaved = True

    def scores(self, query_weights: sp.csr_matrix) -> np.ndarray:
        """Dot products of each query row with every document: (queries, documents)."""
        out = np.zeros((query_weights.shape[0], len(self.chunks)), dtype=np.float32)
        for row in range(query_weights.shape[0]):
            q = query_weights.getrow(row)
            terms, weights = q.indices, q.data
            if len(terms):  # only the posting lists of the query's own terms
                out[row] = self.postings[:, terms] @ weights
        return out

    def search(
        self, queries: Sequence[str], k: int = 10, filter: Filter | None = None  # noqa: A002
    ) -> list[list[Hit]]:
        check_k(k)
        keep = select(self.chunks, filter)  # masks the scores: exact at any selectivity
        allowed = np.ones(len(self.chunks), dtype=bool) if keep is None else keep
        if not allowed.any():
            return [[] for _ in queries]
        k = min(k, int(allowed.sum()))
        scores = self.scores(self.encoder.encode_queries(list(queries)))
        scores[:, ~allowed] = -np.inf
        results = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.argsort(-row[top], kind="stable")]
            results.append([Hit(chunk=self.chunks[i], score=float(row[i]), retriever=self.name)
                            for i in top])
        return results

    def save(self, path: str | Path) -> None:
        if not self.chunks:
            raise RagError("nothing to save: the index is empty")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_chunks(folder / CHUNKS, self.chunks)
        with atomic_path(folder / POSTINGS) as tmp, open(tmp, "wb") as fh:
            sp.save_npz(fh, self.postings)
        write_manifest(folder, FORMAT, {
            "encoder": self.encoder.pinned_spec(), "encoder_fingerprint": self.encoder.fingerprint,
            "count": len(self.chunks), "vocabulary": self.postings.shape[1],
        })
        self.config.path = str(folder)
        self._unsaved = False
