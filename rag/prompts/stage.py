"""Pipeline stages that build the prompt a generator reads: RAG, closed-book, and code tasks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rag.pipeline import Stage, Writes
from rag.prompts.templates import (
    CLOSED_BOOK_SYSTEM, RAG_SYSTEM, RAG_USER, RAG_USER_AROUND, chat, demo_turns, format_passages,
    solve_chat, solve_completion,
)
from rag.registry import ComponentConfig, register
from rag.selectors.prompt import ordered
from rag.state import View
from rag.types import Citation


@register("stage", "rag_prompt")
class RagPrompt(Stage):
    """Numbered passages, then the question; the answer is asked to cite passage numbers.

    `order="relevance_last"` (the default) puts the best passage next to the question: small
    models lean on what they read last, and answered our demo questions far better that way.
    `repeat_question` also puts the question before the passages (query-aware contextualization,
    Liu et al. 2023), so a decoder-only model reads them knowing what is asked. Demonstrations a
    `select` stage put in the state come first, each a question and its answer as an earlier
    exchange (kNN-chosen examples, KATE, Liu et al. 2022), the most similar next to the question,
    to show the answer's form without spending passages' tokens; `bench` copies their answers
    instead, so the QA default shows none (benchmarks/qa_demos.py).
    """

    reads = ("query", "history", "hits")
    optional_reads = ("demos",)
    writes = ("prompt", "sources")

    class Config(ComponentConfig):
        system: str = RAG_SYSTEM
        max_passages: int | None = Field(default=None, ge=1)
        order: Literal["relevance_first", "relevance_last"] = "relevance_last"
        repeat_question: bool = False

    config: Config

    def run(self, batch: list[View]) -> list[Writes]:
        template = RAG_USER_AROUND if self.config.repeat_question else RAG_USER
        out = []
        for item in batch:
            hits = item.hits[: self.config.max_passages]
            if self.config.order == "relevance_last":
                hits = hits[::-1]
            sources = [Citation.of(i, h.chunk) for i, h in enumerate(hits, 1)]
            user = template.format(passages=format_passages(hits), question=item.query)
            turns = [*demo_turns(ordered(item.demos, "similar_last")), *item.history]
            out.append({"prompt": chat(self.config.system, turns, user), "sources": sources})
        return out


@register("stage", "closed_book_prompt")
class ClosedBookPrompt(Stage):
    """The question alone: the baseline every RAG pipeline is measured against."""

    reads = ("query", "history")
    writes = ("prompt",)

    class Config(ComponentConfig):
        system: str = CLOSED_BOOK_SYSTEM

    config: Config

    def run(self, batch: list[View]) -> list[Writes]:
        return [{"prompt": chat(self.config.system, item.history, item.query)} for item in batch]


@register("stage", "code_prompt")
class CodePrompt(Stage):
    """A function to complete (the query: signature and docstring), after any demonstrations.

    `chat`: one user turn asking for the whole function in a code block, each demonstration a
    solved exchange before it. `completion`: plain text, solved functions then the task, for the
    model to continue with the body (the LAIL paper's format).
    """

    reads = ("query",)
    optional_reads = ("demos",)
    writes = ("prompt",)

    class Config(ComponentConfig):
        style: Literal["chat", "completion"] = "chat"
        order: Literal["similar_last", "as_given"] = Field(
            default="similar_last", description="similar_last: best demonstration next to the task")

    config: Config

    def run(self, batch: list[View]) -> list[Writes]:
        build = solve_chat if self.config.style == "chat" else solve_completion
        out = []
        for item in batch:
            demos = item.demos[::-1] if self.config.order == "similar_last" else item.demos
            out.append({"prompt": build(item.query, demos)})
        return out
