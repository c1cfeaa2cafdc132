"""An index of documents kept current: add, change and delete whole documents in place.

A `DocumentIndex` is a hybrid index plus the catalog of the documents it holds (id, content hash,
chunk ids) and the chunker that cut them. `sync(docs)` makes it hold exactly `docs`: new and
changed documents are chunked and embedded, changed and removed ones lose every chunk in every
child index, unchanged ones are left alone. Chunk ids depend only on a document's id and text, so
the result holds the same chunks as a rebuild of the final set.

Every save writes a new version folder (`v<N>/`, children and catalog) beside the old one and
switches to it by one atomic rename of `manifest.json`; the old version is removed after. A
`kill -9` at any point leaves the folder at the old version or at the new one, and the next
writer clears what a killed one left. Writers hold an exclusive lock (`.lock`): a second writer
gets `IndexLockedError`, not a corrupt folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rag.chunkers import Chunker
from rag.errors import (
    ConfigError,
    EncoderMismatchError,
    IndexLoadError,
    IndexLockedError,
    RagError,
)
from rag.registry import build
from rag.retrievers.base import MANIFEST, read_manifest
from rag.retrievers.fusion import FORMAT, HybridRetriever
from rag.storage import atomic_path
from rag.types import Chunk, Document

CATALOG = "documents.jsonl"
LOCK = ".lock"
VERSION = re.compile(r"v(\d+)")


def content_hash(doc: Document) -> str:
    """What decides whether a document changed: its title, text and metadata."""
    payload = json.dumps([doc.title, doc.text, doc.metadata], sort_keys=True, ensure_ascii=False,
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class Entry(BaseModel):
    """One indexed document: its id (a file's relative path, or a JSONL id), hash and chunks."""

    id: str
    hash: str
    chunks: list[str]


@dataclass
class Changes:
    """What an update did, by document id."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.deleted)

    def __str__(self) -> str:
        return (f"{len(self.added)} added, {len(self.updated)} updated, "
                f"{len(self.deleted)} deleted, {len(self.unchanged)} unchanged")


@contextmanager
def writer_lock(folder: str | Path) -> Iterator[None]:
    """Hold the folder's exclusive write lock (released by the OS if the process dies)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexLockedError(f"{folder} is being written by another process (it holds "
                                   f"{folder / LOCK}); wait for that one to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _catalog(path: Path) -> dict[str, Entry]:
    if not path.is_file():
        raise IndexLoadError(f"document catalog not found: {path}")
    entries = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = Entry.model_validate_json(line)
        except ValueError as exc:
            raise IndexLoadError(f"{path}:{lineno}: not a valid catalog entry: {exc}") from None
        entries[entry.id] = entry
    return entries


def _differences(stored: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    return [f"{key}: {stored.get(key)!r} (index) vs {asked.get(key)!r} (asked)"
            for key in sorted(set(stored) | set(asked)) if stored.get(key) != asked.get(key)]


class DocumentIndex:
    """A saved hybrid index and its document catalog, updated by whole documents."""

    def __init__(self, folder: str | Path, retriever: HybridRetriever, chunker: Chunker,
                 entries: dict[str, Entry] | None = None, version: int = 0) -> None:
        self.folder = Path(folder)
        self.retriever = retriever
        self.chunker = chunker
        self.entries: dict[str, Entry] = dict(entries or {})
        self.version = version

    @classmethod
    def open(cls, folder: str | Path, chunker: Chunker | dict[str, Any] | None = None,
             ) -> DocumentIndex:
        """A folder `rag index` (or `save`) wrote. `chunker`, when given, must be the one the
        index was built with: documents cut another way would not match its chunks."""
        folder = Path(folder)
        manifest = read_manifest(folder, FORMAT)
        info = manifest.get("documents")
        if not isinstance(info, dict):
            raise IndexLoadError(
                f"{folder} holds chunks without a document catalog (built by `hybrid_index`), so "
                "it cannot be updated by document: build it with `rag index` or `index_corpus`")
        stored = build("chunker", info["chunker"])
        if chunker is not None:
            asked = build("chunker", chunker)
            changed = _differences(stored.spec(), asked.spec())
            if changed:
                raise ConfigError(f"{folder} was chunked otherwise than this update asks: "
                                  + "; ".join(changed) + ". Rebuild it into a new folder")
        return cls(folder, HybridRetriever(path=str(folder)), stored,
                   _catalog(folder / info["catalog"]), int(info["version"]))

    def __len__(self) -> int:
        return len(self.entries)

    def plan(self, docs: Sequence[Document]) -> Changes:
        """What `sync(docs)` would do, doing nothing."""
        counts = Counter(d.id for d in docs)
        repeated = sorted(i for i, n in counts.items() if n > 1)
        if repeated:
            raise RagError(f"document ids must be unique; repeated: {repeated[:5]}")
        changes = Changes(deleted=[i for i in self.entries if i not in counts])
        for doc in docs:
            entry = self.entries.get(doc.id)
            if entry is None:
                changes.added.append(doc.id)
            elif entry.hash != content_hash(doc):
                changes.updated.append(doc.id)
            else:
                changes.unchanged.append(doc.id)
        return changes

    def upsert(self, docs: Sequence[Document], progress: bool = False) -> Changes:
        """Add new documents and replace changed ones; the others are untouched."""
        changes = self.plan(docs)
        changes.deleted = []
        return self._apply(changes, docs, progress)

    def delete(self, doc_ids: Sequence[str]) -> Changes:
        """Remove documents and all their chunks; an id not in the index is an error."""
        unknown = [i for i in doc_ids if i not in self.entries]
        if unknown:
            raise RagError(f"cannot delete documents that are not in the index: {unknown[:5]}")
        self._remove(doc_ids)
        return Changes(deleted=list(doc_ids), unchanged=list(self.entries))

    def sync(self, docs: Sequence[Document], progress: bool = False) -> Changes:
        """Make the index hold exactly `docs`: upsert them, delete the documents not among them."""
        if not docs:
            raise RagError("the update would delete every document; delete the folder instead")
        return self._apply(self.plan(docs), docs, progress)

    def _apply(self, changes: Changes, docs: Sequence[Document], progress: bool) -> Changes:
        """Remove the deleted and changed documents' chunks, then chunk, embed and add the new
        and changed ones (one removal and one addition per child index)."""
        self._remove([*changes.deleted, *changes.updated])
        fresh = {*changes.added, *changes.updated}
        todo = [d for d in docs if d.id in fresh]
        chunks = self.chunker.chunk_all(todo, progress=progress) if todo else []
        if chunks:
            self.retriever.add(chunks, progress=progress)
        self.record(todo, chunks)
        return changes

    def record(self, docs: Sequence[Document], chunks: Sequence[Chunk]) -> None:
        """Catalog documents whose chunks the retriever was given elsewhere (e.g. on Ray)."""
        by_doc: dict[str, list[str]] = {d.id: [] for d in docs}
        for chunk in chunks:
            by_doc[chunk.doc_id].append(chunk.id)
        for doc in docs:
            self.entries[doc.id] = Entry(id=doc.id, hash=content_hash(doc), chunks=by_doc[doc.id])

    def _remove(self, doc_ids: Sequence[str]) -> None:
        chunk_ids = [c for i in doc_ids for c in self.entries[i].chunks]
        if chunk_ids:
            self.retriever.delete(chunk_ids)
        for i in doc_ids:
            del self.entries[i]

    def save(self) -> None:
        """Write the next version beside the current one, switch to it atomically, then remove
        the old one. Call it holding `writer_lock(folder)`."""
        if not self.entries:
            raise RagError("nothing to save: the index holds no documents")
        version = self.version + 1
        folder = self.folder / f"v{version}"
        shutil.rmtree(folder, ignore_errors=True)  # a killed writer's partial copy
        folder.mkdir(parents=True)
        with atomic_path(folder / CATALOG) as tmp:
            tmp.write_text("".join(e.model_dump_json() + "\n" for e in self.entries.values()),
                           encoding="utf-8")
        self.retriever.save(self.folder, subfolder=folder.name, extra={"documents": {
            "version": version, "catalog": f"{folder.name}/{CATALOG}",
            "chunker": self.chunker.spec()}})  # its manifest is the switch
        self.version = version
        clear_stale(self.folder)


def check_same_children(index: HybridRetriever, asked: HybridRetriever) -> None:
    """Refuse an update that asks for other child indexes, or another encoder, than the saved
    index holds: new vectors would not be comparable with the stored ones."""
    held, wanted = [c.name for c in index.retrievers], [c.name for c in asked.retrievers]
    if held != wanted:
        raise ConfigError(f"{index.config.path} holds {' + '.join(held)} indexes, the update asks "
                          f"for {' + '.join(wanted)}; rebuild it into a new folder")
    for old, new in zip(index.retrievers, asked.retrievers):
        have, want = getattr(old, "encoder", None), getattr(new, "encoder", None)
        if have is not None and want is not None and have.fingerprint != want.fingerprint:
            raise EncoderMismatchError(
                f"{index.config.path} was built with encoder {have.pinned_spec()}, the update "
                f"asks for {want.pinned_spec()}; rebuild it into a new folder")


def clear_stale(folder: str | Path) -> None:
    """Remove what the manifest does not name: older versions, a killed writer's partial one,
    child folders of the unversioned layout and temporary files."""
    folder = Path(folder)
    manifest = read_manifest(folder, FORMAT)
    live = {Path(r["path"]).parts[0] for r in manifest["spec"]["retrievers"] if r.get("path")}
    for path in folder.iterdir():
        if path.name in live or path.name in (MANIFEST, LOCK):
            continue
        if path.is_dir() and (VERSION.fullmatch(path.name) or (path / MANIFEST).exists()
                              or re.fullmatch(r"\d+-\w+", path.name)):
            shutil.rmtree(path)
        elif path.name.startswith(f".{MANIFEST}.") and path.name.endswith(".tmp"):
            path.unlink()
