"""Reading a user's files: each parsed by its suffix into one `Document` (a `.jsonl` file into
one per line), and each file that could not be read listed with the reason, never dropped.

A parsed document's metadata holds where its sections and pages start; `metadata_at` turns that
into the `section` and `page` of one chunk, so that every chunker gets them right without
knowing about file formats.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import CorpusError
from rag.ingest.jsonl import read_jsonl
from rag.ingest.parsers import PARSERS, Unreadable
from rag.types import Document

SECTION_STARTS = "section_starts"
PAGE_STARTS = "page_starts"
JSONL = ".jsonl"


def readable_suffixes() -> list[str]:
    return sorted({*PARSERS, JSONL})


@dataclass(frozen=True)
class UnreadableFile:
    """A file left out of the corpus: its path relative to the folder read, and why."""

    path: str
    reason: str


@dataclass
class Ingested:
    """The documents read from a path, and the files that could not be read."""

    documents: list[Document] = field(default_factory=list)
    unreadable: list[UnreadableFile] = field(default_factory=list)


def file_documents(path: Path, source: str) -> list[Document]:
    """The documents of one file; `source` (its path relative to the folder read) is the id."""
    suffix = path.suffix.lower()
    if suffix == JSONL:
        return [doc.model_copy(update={"id": f"{source}:{doc.id}",
                                       "metadata": {**doc.metadata, "source": source}})
                for doc in read_jsonl(path)]
    parse = PARSERS.get(suffix)
    if parse is None:
        raise Unreadable(f"no reader for {suffix or 'files without a suffix'} (readable: "
                         f"{', '.join(readable_suffixes())})")
    parsed = parse(path)
    title = parsed.title or path.stem
    metadata: dict[str, Any] = {"source": source, "title": title, SECTION_STARTS: parsed.sections}
    if parsed.pages:
        metadata[PAGE_STARTS] = parsed.pages
    return [Document(id=source, text=parsed.text, title=title, metadata=metadata)]


def read_files(path: str | Path) -> Ingested:
    """Every file under a folder (in sorted order, hidden files and folders left out), or one
    file. A file no parser can read is listed with its reason; a parser's own exception on a
    corrupt file becomes such a reason too."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        base = path
    else:
        files, base = [path], path.parent
    ingested = Ingested()
    for file in files:
        source = file.relative_to(base).as_posix()
        try:
            ingested.documents.extend(file_documents(file, source))
        except (Unreadable, CorpusError) as exc:
            ingested.unreadable.append(UnreadableFile(source, str(exc)))
        except ImportError:
            raise  # a missing parser library is the installation's fault, not the file's
        except Exception as exc:  # parsers raise many types on a damaged file
            reason = f"corrupt or not a {file.suffix.lower()} file ({type(exc).__name__}: {exc})"
            ingested.unreadable.append(UnreadableFile(source, reason))
    return ingested


def _value_at(starts: list[Any], offset: int) -> Any:
    """The value of the last (start, value) pair starting at or before `offset`, else None."""
    i = bisect_right([start for start, _ in starts], offset) - 1
    return starts[i][1] if i >= 0 else None


def metadata_at(metadata: dict[str, Any], offset: int) -> dict[str, Any]:
    """A document's metadata as seen by its chunk starting at `offset`: the section and page
    lists become that chunk's `section` ("" before the first heading) and `page`."""
    if SECTION_STARTS not in metadata and PAGE_STARTS not in metadata:
        return metadata
    out = {k: v for k, v in metadata.items() if k not in (SECTION_STARTS, PAGE_STARTS)}
    if SECTION_STARTS in metadata:
        out["section"] = _value_at(metadata[SECTION_STARTS], offset) or ""
    if PAGE_STARTS in metadata:
        out["page"] = _value_at(metadata[PAGE_STARTS], offset)
    return out
