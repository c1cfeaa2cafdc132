"""JSON lines: the one reader of JSONL documents (a corpus file, or a `.jsonl` inside a folder of a
user's files) and of JSONL records with their `file:line` for exact error messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.errors import CorpusError
from rag.types import Document


def _record_to_document(record: Any, where: str) -> Document:
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
    record = dict(record)
    if "id" not in record:
        raise CorpusError(f"{where}: missing 'id'")
    text = record.pop("text", None)
    if text is None:
        text = record.pop("contents", None)
        # FlashRAG corpora store '"Title"\ntext' in `contents`.
        if isinstance(text, str) and "title" not in record and text.startswith('"') and "\n" in text:
            head, text = text.split("\n", 1)
            record["title"] = head.strip('"')
    if not isinstance(text, str) or not text.strip():
        raise CorpusError(f"{where}: missing or empty 'text' (or 'contents')")
    title = record.pop("title", "") or ""
    doc_id = str(record.pop("id"))
    metadata = record.pop("metadata", {}) if isinstance(record.get("metadata"), dict) else {}
    return Document(id=doc_id, text=text, title=str(title), metadata={**metadata, **record})


def iter_json_lines(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(`file:line`, parsed value) for each non-blank line; a broken line raises with its place."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def read_jsonl(path: str | Path) -> Iterator[Document]:
    """Documents from a JSONL file: `id`, `text` or `contents`, optional `title`, the rest metadata."""
    seen: dict[str, str] = {}
    for where, record in iter_json_lines(path):
        doc = _record_to_document(record, where)
        if doc.id in seen:
            raise CorpusError(f"{where}: duplicate id {doc.id!r} (first at {seen[doc.id]})")
        seen[doc.id] = where
        yield doc
