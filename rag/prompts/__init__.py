"""Prompts: the instruction texts, the stages that build prompts, and citations of answers."""

from rag.prompts.citations import answer_for, cite
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
    "RagPrompt",
    "answer_for",
    "cite",
    "format_passages",
    "solve_chat",
    "solve_completion",
]
