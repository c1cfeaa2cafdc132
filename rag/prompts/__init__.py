"""Prompts: the instruction texts and the stages that build prompts (citations: `rag.answers`),
and `condense`, which rewrites a follow-up question for retrieval."""

from rag.prompts.condense import Condense
from rag.prompts.stage import ClosedBookPrompt, CodePrompt, RagPrompt
from rag.prompts.templates import (
    CLOSED_BOOK_SYSTEM, RAG_SYSTEM, SHORT_CLOSED_BOOK_SYSTEM, SHORT_RAG_SYSTEM, format_passages,
    solve_chat, solve_completion,
)

__all__ = [
    "CLOSED_BOOK_SYSTEM",
    "RAG_SYSTEM",
    "SHORT_CLOSED_BOOK_SYSTEM",
    "SHORT_RAG_SYSTEM",
    "ClosedBookPrompt",
    "CodePrompt",
    "Condense",
    "RagPrompt",
    "format_passages",
    "solve_chat",
    "solve_completion",
]
