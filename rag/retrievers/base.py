"""The retriever interface, and the index-folder manifest every persistent retriever writes."""

from __future__ import annotations

from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

from rag.errors import EncoderMismatchError, IndexLoadError, RagError
from rag.registry import Component, build, registered
from rag.retrievers.filters import Filter
from rag.storage import atomic_path, atomic_write_json, load_json
from rag.types import Chunk, Hit

MANIFEST = "manifest.json"
CHUNKS = "chunks.jsonl"

def embed_text(chunk: Chunk) -> str:
    """The text a chunk is indexed as: its title (when it has one) gives the passage context."""
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


def check_new_ids(known: Container[str], chunks: Sequence[Chunk]) -> None:
    """Refuse chunk ids that are already indexed or repeated within `chunks`."""
    clashes = [c.id for c in chunks if c.id in known]
    if clashes or len({c.id for c in chunks}) != len(chunks):
        raise RagError(f"chunk ids must be unique; already present or repeated: {clashes[:5]}")


def check_deletable(live: Container[str], ids: Sequence[str]) -> None:
    """Refuse to delete ids that are not (or no longer) indexed."""
    unknown = [i for i in ids if i not in live]
    if unknown:
        raise RagError(f"cannot delete unknown chunk ids: {unknown[:5]}")


def check_k(k: int) -> None:
    if k < 1:
        raise RagError(f"k must be at least 1, got {k}")


class Retriever(Component):
    """Base of retrievers: `index`/`add`/`delete` chunks, `search` a batch of queries, persist.

    Every retriever returns, per query, at most `k` hits best first, each naming the retriever;
    a `filter` (rag.retrievers.filters) keeps only chunks that match it, applied inside the index
    before its top k, so k hits come back when k match.
    """

    kind = "retriever"
    format: ClassVar[str] = ""  # the manifest format of the folders `save` writes
    _unsaved = False  # set by add/delete, cleared by save/load

    def spec(self) -> dict[str, Any]:
        if self._unsaved:
            raise RagError(
                f"this {self.name} index lives only in memory (or has unsaved changes), so a "
                "pipeline file could not rebuild it: call `retriever.save(FOLDER)` first, then "
                "save the pipeline (its spec will name the folder)")
        return super().spec()

    def add(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        raise NotImplementedError

    def index(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        """Replace the contents with `chunks`."""
        raise NotImplementedError

    def delete(self, ids: Sequence[str]) -> None:
        """Remove chunks by id; unknown ids are an error."""
        raise NotImplementedError

    def search(
        self, queries: Sequence[str], k: int = 10, filter: Filter | None = None
    ) -> list[list[Hit]]:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> Self:
        """Open a folder written by `save`; keyword arguments override its config."""
        return cls(path=str(path), **kwargs)

    def __len__(self) -> int:
        raise NotImplementedError


def check_index_encoder(folder: str | Path, manifest: dict[str, Any], encoder: Any) -> None:
    """Refuse to query a saved index with an encoder that makes other vectors than its own."""
    if manifest["encoder_fingerprint"] != encoder.fingerprint:
        raise EncoderMismatchError(
            f"{folder} was built with encoder {manifest['encoder']} but this retriever encodes "
            f"queries with {encoder.pinned_spec()}; vectors would not be comparable")


def write_manifest(folder: Path, fmt: str, info: dict[str, Any]) -> None:
    """Written last by `save`, so a folder with a manifest holds complete files."""
    atomic_write_json(folder / MANIFEST, {"format": fmt, **info})


def read_manifest(folder: str | Path, fmt: str) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise IndexLoadError(f"index folder not found: {folder}")
    manifest = load_json(folder / MANIFEST, "index manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise IndexLoadError(f"{folder / MANIFEST}: expected a {fmt!r} index, found {found!r}")
    return manifest


def open_index(path: str | Path) -> Retriever:
    """Whatever index a folder holds (hybrid, HNSW, BM25, SPLADE), found by its manifest."""
    if not Path(path).is_dir():
        raise IndexLoadError(f"index folder not found: {path}")
    manifest = load_json(Path(path) / MANIFEST, "index manifest")
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    for name, cls in registered("retriever").items():
        if cls.format and cls.format == fmt:
            return build("retriever", {"type": name, "path": str(path)})
    raise IndexLoadError(f"{Path(path) / MANIFEST}: not an index this version can open ({fmt!r})")


def save_chunks(path: Path, chunks: Sequence[Chunk]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.writelines(chunk.model_dump_json() + "\n" for chunk in chunks)


def load_chunks(path: Path, expected: int) -> list[Chunk]:
    if not path.is_file():
        raise IndexLoadError(f"chunk file not found: {path}")
    chunks = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                chunks.append(Chunk.model_validate_json(line))
            except ValueError as exc:
                raise IndexLoadError(f"{path}:{lineno}: not a valid chunk: {exc}") from None
    if len(chunks) != expected:
        raise IndexLoadError(
            f"{path} holds {len(chunks)} chunks but the manifest says {expected} (truncated?)"
        )
    return chunks
