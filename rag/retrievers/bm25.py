"""BM25 sparse retrieval on bm25s (scores precomputed into a sparse matrix, numpy top-k).

bm25s has no incremental update, so `add` and `delete` re-index the live chunks: linear in the
corpus, about a second per ten thousand passages here, and exact. Saved with bm25s's own
`.npy`/JSON files (never pickle) beside our manifest and chunks.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from rag.errors import IndexLoadError, RagError
from rag.registry import ComponentConfig, register
from rag.retrievers.base import (
    CHUNKS,
    Filter,
    Retriever,
    check_deletable,
    check_k,
    check_new_ids,
    embed_text,
    load_chunks,
    read_manifest,
    save_chunks,
    write_manifest,
)
from rag.retrievers.filters import select
from rag.types import Chunk, Hit

FORMAT = "rag-icl/bm25-v1"
SCORES = "bm25s"


@register("retriever", "bm25")
class BM25Retriever(Retriever):
    """Okapi BM25 with the usual k1 and b, and a tokenizer set by config."""

    format = FORMAT

    class Config(ComponentConfig):
        path: str | None = Field(default=None, description="index folder to load; None: empty")
        k1: float = Field(default=1.5, gt=0)
        b: float = Field(default=0.75, ge=0, le=1)
        method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
        lowercase: bool = True
        token_pattern: str = Field(default=r"(?u)\b\w\w+\b", description="regex of one token")
        stopwords: Literal["en", "none"] = "en"

    config: Config

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("path"):  # queries must be tokenized exactly as the index was
            kwargs = {**read_manifest(kwargs["path"], FORMAT)["config"], **kwargs}
        super().__init__(**kwargs)
        self.chunks: list[Chunk] = []
        self._model: Any = None
        if self.config.path:
            self._load(Path(self.config.path))

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(
            texts, lower=self.config.lowercase, token_pattern=self.config.token_pattern,
            stopwords="en" if self.config.stopwords == "en" else None, return_ids=False,
            show_progress=False,
        )

    def _rebuild(self, progress: bool = False) -> None:
        import bm25s

        self._model = None
        if self.chunks:
            model = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
            model.index(self._tokenize([embed_text(c) for c in self.chunks]), show_progress=progress)
            self._model = model
        self._unsaved = True

    def __len__(self) -> int:
        return len(self.chunks)

    def index(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        self.chunks = []
        self.add(chunks, progress)

    def add(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        check_new_ids({c.id for c in self.chunks}, chunks)
        self.chunks.extend(chunks)
        self._rebuild(progress)

    def delete(self, ids: Sequence[str]) -> None:
        check_deletable({c.id for c in self.chunks}, ids)
        gone = set(ids)
        self.chunks = [c for c in self.chunks if c.id not in gone]
        self._rebuild()

    def search(
        self, queries: Sequence[str], k: int = 10, filter: Filter | None = None
    ) -> list[list[Hit]]:
        check_k(k)
        # a mask over the scores: exact at any selectivity, so no fallback is needed
        keep = select(self.chunks, filter)
        mask = (np.ones(len(self.chunks)) if keep is None else keep).astype(np.float32)
        live = int(mask.sum())
        if self._model is None or live == 0:
            return [[] for _ in queries]
        k = min(k, live)
        tokens = self._tokenize(list(queries))
        # a query of stopwords only has no term to score: it finds nothing (bm25s would fail)
        searchable = [i for i, t in enumerate(tokens) if t]
        results: list[list[Hit]] = [[] for _ in queries]
        if not searchable:
            return results
        ids, scores = self._model.retrieve(
            [tokens[i] for i in searchable], k=k, show_progress=False, n_threads=1,
            weight_mask=None if keep is None else mask,
        )
        allowed = np.flatnonzero(mask)
        for at, row_ids, row_scores in zip(searchable, ids, scores):
            # bm25s pads a masked ranking with non-matching zero-score documents: drop those and
            # pad with matching ones instead, so k matches come back whenever k exist.
            row = [(int(i), float(s)) for i, s in zip(row_ids, row_scores) if mask[int(i)]]
            seen = {i for i, _ in row}
            row += [(int(i), 0.0) for i in allowed if int(i) not in seen][: k - len(row)]
            results[at] = [Hit(chunk=self.chunks[i], score=s, retriever=self.name) for i, s in row]
        return results

    def save(self, path: str | Path) -> None:
        if self._model is None:
            raise RagError("nothing to save: the index is empty")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_chunks(folder / CHUNKS, self.chunks)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".bm25s."))
        self._model.save(str(staging), show_progress=False)
        shutil.rmtree(folder / SCORES, ignore_errors=True)
        staging.rename(folder / SCORES)
        write_manifest(folder, FORMAT, {"count": len(self.chunks), "config": self.config.model_dump(
            exclude={"path"})})
        self.config.path = str(folder)
        self._unsaved = False

    def _load(self, folder: Path) -> None:
        import bm25s

        manifest = read_manifest(folder, FORMAT)
        self.chunks = load_chunks(folder / CHUNKS, manifest["count"])
        try:
            self._model = bm25s.BM25.load(str(folder / SCORES), show_progress=False)
        except Exception as exc:  # bm25s raises anything on a damaged folder
            raise IndexLoadError(f"{folder / SCORES} is not a valid bm25s index: {exc}") from None
        if self._model.scores["num_docs"] != len(self.chunks):
            raise IndexLoadError(f"{folder / SCORES} scores {self._model.scores['num_docs']} "
                                 f"documents, {folder / CHUNKS} holds {len(self.chunks)}")
