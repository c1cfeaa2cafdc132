"""Prompt builders: turn a query (and its hits) into the chat prompt a generator reads.

The RAG prompt numbers the passages `[1]`, `[2]`, ... in the order shown and asks the model to
cite them that way; `cite` maps the numbers in an answer back to the chunks, and falls back to
word overlap for small models that answer without markers. The fixed instructions come first
and byte-identical in every prompt, so vLLM's prefix cache reuses them across queries.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from rag.pipeline import Stage, State
from rag.registry import ComponentConfig, register
from rag.types import Citation, Hit, Message, Prompt

RAG_SYSTEM = (
    "You answer questions using the numbered passages. Answer briefly, and cite the passages "
    "you used by their numbers in square brackets, like [1]. If the passages do not contain the "
    "answer, say that you do not know."
)
CLOSED_BOOK_SYSTEM = "You answer questions briefly and accurately."

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_WORD = re.compile(r"\w+")
# Words too common to say which passage an answer came from.
_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "his", "in", "is", "it", "its", "of", "on", "or", "she", "that", "the", "their", "there", "they", "this", "to", "was", "were", "what", "when", "where", "which", "who", "whom", "why", "will", "with", "you", "your", "i", "not", "no", "yes", "answer", "passage", "passages", "question"]
)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def cite(text: str, sources: list[Citation], hits: list[Hit]) -> list[Citation]:
    """The passages an answer cites as `[n]` or `[n, m]`, in order of first mention.

    An answer without markers is attributed to the passage sharing the most content words with
    it (at least two), marked `inferred`; an answer that overlaps no passage cites nothing.
    """
    by_number = {s.number: s for s in sources}
    cited: dict[int, Citation] = {}
    for match in _CITATION.finditer(text):
        for number in (int(n) for n in match.group(1).split(",")):
            if number in by_number and number not in cited:
                cited[number] = by_number[number]
    if cited or not sources:
        return list(cited.values())
    answer_words = _content_words(text)
    by_chunk = {s.chunk_id: s for s in sources}
    overlaps = [  # in retrieval rank order, so ties go to the better-ranked passage
        (
            len(answer_words & _content_words(f"{h.chunk.title} {h.chunk.text}"))
            + len(answer_words & _content_words(h.chunk.title)),  # a named title counts twice
            by_chunk[h.chunk.id],
        )
        for h in hits
        if h.chunk.id in by_chunk
    ]
    best, source = max(overlaps, key=lambda pair: pair[0], default=(0, None))
    return [source.model_copy(update={"inferred": True})] if source and best >= 2 else []


def format_passages(hits: list[Hit]) -> str:
    """Passages numbered from 1 in the order given, each with its title line when it has one."""
    blocks = []
    for number, hit in enumerate(hits, 1):
        title = f"{hit.chunk.title}\n" if hit.chunk.title else ""
        blocks.append(f"[{number}] {title}{hit.chunk.text}")
    return "\n\n".join(blocks)


def _messages(system: str, history: list[Message], user: str) -> Prompt:
    return Prompt(messages=[Message(role="system", content=system), *history,
                            Message(role="user", content=user)])


@register("stage", "rag_prompt")
class RagPrompt(Stage):
    """Numbered passages, then the question; the answer is asked to cite passage numbers.

    `order="relevance_last"` (the default) puts the best passage next to the question: small
    models lean on what they read last, and answered our demo questions far better that way.
    """

    reads = ("query", "hits")
    writes = ("prompt", "sources")

    class Config(ComponentConfig):
        system: str = RAG_SYSTEM
        max_passages: int | None = Field(default=None, ge=1)
        order: Literal["relevance_first", "relevance_last"] = "relevance_last"

    config: Config

    def run(self, states: list[State]) -> None:
        for state in states:
            hits = state.hits[: self.config.max_passages]
            if self.config.order == "relevance_last":
                hits = hits[::-1]
            state.sources = [
                Citation(number=i, chunk_id=h.chunk.id, doc_id=h.chunk.doc_id, title=h.chunk.title)
                for i, h in enumerate(hits, 1)
            ]
            user = f"Passages:\n{format_passages(hits)}\n\nQuestion: {state.query}"
            state.prompt = _messages(self.config.system, state.history, user)


@register("stage", "closed_book_prompt")
class ClosedBookPrompt(Stage):
    """The question alone: the baseline every RAG pipeline is measured against."""

    reads = ("query",)
    writes = ("prompt",)

    class Config(ComponentConfig):
        system: str = CLOSED_BOOK_SYSTEM

    config: Config

    def run(self, states: list[State]) -> None:
        for state in states:
            state.prompt = _messages(self.config.system, state.history, state.query)
