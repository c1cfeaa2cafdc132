"""Indexing as Ray Data stages: chunking and embedding spread over actors, one index folder out.

The corpus becomes a Ray dataset of documents; `map_batches` chunks them in a pool of actors
that each hold the chunker, then embeds the chunks in a pool of actors that each hold the
encoder (on a GPU each where the cluster has them). The driver gathers chunks and vectors in
corpus order and writes the same hybrid folder as the in-process path (`rag.recipes`), so
everything that opens an index opens this one. Rows travel as JSON strings: documents' metadata
differ in shape, which Arrow columns would not accept.

Documents enter the dataset longest first, so that each batch an actor embeds holds chunks of
similar length: the in-process encoder sorts the whole corpus by length before batching, and
batches of mixed lengths spend most of their time on padding. Each row carries its document's
position, which puts the chunks back in corpus order at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.chunkers import FixedTokenChunker
from rag.distributed import connect
from rag.registry import build
from rag.errors import IndexExistsError
from rag.retrievers import DocumentIndex, HybridRetriever
from rag.retrievers.documents import writer_lock
from rag.retrievers.base import embed_text
from rag.types import Chunk, Document


class ChunkDocuments:
    """A Ray actor: documents (JSON) in, their chunks (JSON) out, in order."""

    def __init__(self, chunk_size: int, overlap: int, tokenizer: str) -> None:
        self.chunker = FixedTokenChunker(size=chunk_size, overlap=overlap, tokenizer=tokenizer)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows = [(int(at), c.model_dump_json()) for at, d in zip(batch["at"], batch["doc"])
                for c in self.chunker.chunk(Document.model_validate_json(d))]
        return {"at": [at for at, _ in rows], "chunk": [c for _, c in rows]}


class EmbedChunks:
    """A Ray actor holding one encoder: chunks (JSON) in, chunks and their vectors out."""

    def __init__(self, encoder: dict[str, Any]) -> None:
        self.encoder = build("encoder", encoder)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        chunks = [Chunk.model_validate_json(c) for c in batch["chunk"]]
        return {"at": batch["at"], "chunk": batch["chunk"],
                "vector": self.encoder.encode_documents([embed_text(c) for c in chunks])}


def ray_chunk_and_embed(
    docs: Sequence[Document], encoder: dict[str, Any], chunk_size: int = 200, overlap: int = 0,
    address: str | None = None, actors: int = 2, batch_size: int = 64, gpus_per_actor: float = 0,
) -> tuple[list[Chunk], np.ndarray]:
    """Chunks of `docs` in corpus order and their vectors, computed by Ray Data actor pools.

    `encoder` should be pinned (`Encoder.pinned_spec()`), so every actor, on any machine of the
    cluster, makes the vectors the index will be queried against.
    """
    import ray

    connect(address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the in-process path's chunk order
    context.enable_progress_bars = False
    longest_first = sorted(range(len(docs)), key=lambda i: -len(docs[i].text))
    dataset = ray.data.from_items([{"at": i, "doc": docs[i].model_dump_json()} for i in longest_first])
    pool = ray.data.ActorPoolStrategy(size=actors)
    chunked = dataset.map_batches(ChunkDocuments, fn_constructor_kwargs={
        "chunk_size": chunk_size, "overlap": overlap, "tokenizer": encoder.get("model", "encoder")},
        batch_size=batch_size, compute=pool)
    embedded = chunked.map_batches(EmbedChunks, fn_constructor_kwargs={"encoder": encoder},
                                   batch_size=batch_size, compute=pool, num_gpus=gpus_per_actor)
    rows: list[tuple[int, str, np.ndarray]] = []
    for batch in embedded.iter_batches(batch_size=None):
        rows += zip(batch["at"].tolist(), batch["chunk"], np.asarray(batch["vector"], dtype=np.float32))
    rows.sort(key=lambda row: row[0])  # stable: a document's chunks stay in their order
    chunks = [Chunk.model_validate_json(c) for _, c, _ in rows]
    return chunks, np.vstack([v for _, _, v in rows]) if rows else np.zeros((0, 0), dtype=np.float32)


def ray_index_corpus(
    docs: Sequence[Document], out: str | Path, chunk_size: int = 200, overlap: int = 0,
    encoder: str = "encoder", address: str | None = None, actors: int = 2, batch_size: int = 64,
    gpus_per_actor: float = 0, splade: bool | None = None,
) -> HybridRetriever:
    """`rag.recipes.index_corpus` with chunking and embedding on Ray: the same folder out (the
    SPLADE index, unless `splade` is False, is encoded in this process)."""
    from rag.recipes import hybrid_index, index_encoder_spec, new_index_splade

    if (Path(out) / "manifest.json").exists():
        raise IndexExistsError(f"{out} already holds an index: update it without --ray (only "
                               "changed documents are embedded), or choose another folder")
    spec = build("encoder", index_encoder_spec(encoder)).pinned_spec()
    chunks, vectors = ray_chunk_and_embed(docs, spec, chunk_size, overlap, address, actors,
                                          batch_size, gpus_per_actor)
    index = DocumentIndex(out, hybrid_index(chunks, encoder=encoder, vectors=vectors,
                                           splade=new_index_splade(splade)),
                          FixedTokenChunker(size=chunk_size, overlap=overlap, tokenizer=encoder))
    index.record(docs, chunks)
    with writer_lock(out):
        index.save()
    return index.retriever
