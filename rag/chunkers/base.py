"""The chunker interface: documents in, `Chunk`s with exact character spans out."""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm

from rag.errors import RagError
from rag.ingest import metadata_at
from rag.registry import Component
from rag.types import Chunk, Document


def make_chunk(doc: Document, index: int, start: int, end: int) -> Chunk:
    """The `index`-th chunk of `doc`, covering `doc.text[start:end]`, with the section and page
    where it starts."""
    return Chunk(
        id=f"{doc.id}#{index}", doc_id=doc.id, text=doc.text[start:end], start=start, end=end,
        title=doc.title, metadata=metadata_at(doc.metadata, start),
    )


def check_window(size: int, overlap: int, unit: str) -> None:
    """Validate a window of `size` units sharing `overlap` with the next (for pydantic)."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size} {unit}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size), got {overlap} {unit}")


def windows(count: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Index ranges [first, end) of `size` items starting every `size - overlap` items."""
    ranges = []
    for first in range(0, count, size - overlap):
        ranges.append((first, min(first + size, count)))
        if first + size >= count:
            break
    return ranges


class Chunker(Component):
    """Base of chunkers. Subclasses implement `spans`; chunks follow from them."""

    kind = "chunker"

    def spans(self, doc: Document) -> list[tuple[int, int]]:
        """Character spans of the chunks of one non-empty document, in order."""
        raise NotImplementedError

    def chunk(self, doc: Document) -> list[Chunk]:
        if not doc.text.strip():
            raise RagError(f"document {doc.id!r} is empty: there is nothing to chunk")
        return [make_chunk(doc, i, s, e) for i, (s, e) in enumerate(self.spans(doc))]

    def chunk_all(self, docs: Iterable[Document], progress: bool = False) -> list[Chunk]:
        docs = list(docs)
        chunks: list[Chunk] = []
        for doc in tqdm(docs, desc="chunking", unit="doc", disable=not progress):
            chunks.extend(self.chunk(doc))
        return chunks
