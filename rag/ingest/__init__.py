"""Ingestion of a user's files (PDF, HTML, DOCX, Markdown, plain text, JSONL) into documents
whose chunks know their source, title, section and page."""

from rag.ingest.parsers import PARSERS, Parsed, Unreadable
from rag.ingest.reader import (
    Ingested,
    UnreadableFile,
    metadata_at,
    read_files,
    readable_suffixes,
)

__all__ = [
    "PARSERS",
    "Ingested",
    "Parsed",
    "Unreadable",
    "UnreadableFile",
    "metadata_at",
    "read_files",
    "readable_suffixes",
]
