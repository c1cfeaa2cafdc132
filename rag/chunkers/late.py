"""Late chunking (Günther et al., 2024): embed the whole document once, pool per chunk.

The encoder reads `title + " " + text`, so every token's state carries the document's context
("It" knows what it refers to); each chunk's vector is the mean of the states of its own tokens,
found through the tokenizer's character offsets. The first chunk also takes [CLS] and the title,
the last one [SEP], so a single chunk spanning the document equals the plain mean-pooled
embedding. Documents longer than the window use long late chunking (see
`SentenceTransformerEncoder.token_states`). Needs a mean-pooling encoder, such as MiniLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from rag.chunkers.embedding import ChunkEmbedder, EmbedderConfig, by_document, normalize
from rag.registry import register
from rag.types import Chunk, Document


def pool_spans(states: np.ndarray, offsets: list[tuple[int, int]],
               spans: list[tuple[int, int]], cover_ends: bool = True) -> np.ndarray:
    """Mean of the token states inside each character span; states hold [CLS] ... [SEP].

    With `cover_ends`, the first span also takes [CLS] and the last takes [SEP]. A span with
    no token of its own gives a row of NaN.
    """
    starts = np.array([o[0] for o in offsets], dtype=np.int64)
    ends = np.array([o[1] for o in offsets], dtype=np.int64)
    pooled = []
    last = len(spans) - 1
    for i, (a, b) in enumerate(spans):
        inside = np.flatnonzero((starts < b) & (ends > a)) + 1  # +1: skip [CLS]
        lo = 0 if cover_ends and i == 0 else (inside[0] if len(inside) else None)
        hi = len(states) if cover_ends and i == last else (inside[-1] + 1 if len(inside) else None)
        if lo is None or hi is None or hi <= lo:
            pooled.append(np.full(states.shape[1], np.nan, dtype=np.float32))
        else:
            pooled.append(states[lo:hi].mean(axis=0))
    return np.vstack(pooled)


@register("embedder", "late")
class LateChunkingEmbedder(ChunkEmbedder):
    """One encoder pass per document (per window for long ones), mean-pooled per chunk.

    A document's chunks are expected in order and covering it, as every chunker returns them:
    the first takes the document's start ([CLS] and title), the last its end ([SEP]).
    """

    class Config(EmbedderConfig):
        title: bool = Field(default=True, description="prefix the document with its title")
        overlap: int = Field(default=64, ge=0, description="tokens shared by long-doc windows")

    config: Config

    def embed(self, docs: Sequence[Document], chunks: Sequence[Chunk],
              progress: bool = False) -> np.ndarray:
        parents = by_document(docs, chunks)
        rows_of: dict[str, list[int]] = {}
        for i, chunk in enumerate(chunks):
            rows_of.setdefault(chunk.doc_id, []).append(i)
        order = list(rows_of)
        prefixes = {d: f"{parents[d].title} " if self.config.title and parents[d].title else ""
                    for d in order}
        states = self.encoder.token_states([prefixes[d] + parents[d].text for d in order],
                                           self.config.overlap, progress)
        vectors = np.zeros((len(chunks), self.encoder.dim), dtype=np.float32)
        for doc_id, (doc_states, offsets) in zip(order, states):
            rows = rows_of[doc_id]
            shift = len(prefixes[doc_id])
            spans = [(chunks[i].start + shift, chunks[i].end + shift) for i in rows]
            # the first chunk of the document takes the title; so does its [CLS]
            spans[0] = (0, spans[0][1])
            vectors[rows] = pool_spans(doc_states, offsets, spans)
        return fill_empty(self.encoder, chunks, vectors)


def fill_empty(encoder: Any, chunks: Sequence[Chunk], vectors: np.ndarray) -> np.ndarray:
    """Normalize pooled vectors; a chunk with no token of its own is embedded alone instead."""
    empty = np.flatnonzero(np.isnan(vectors).any(axis=1))
    if len(empty):
        vectors[empty] = encoder.encode_documents([chunks[i].text for i in empty])
    return normalize(vectors)
