"""Answers: the one place an `Answer` is built, and the passages it cites.

Stages never build or patch an `Answer`: they write state fields (`text`, `supported`,
`agreement`, ...) and the pipeline calls `build_answer` once every stage ran, so a stage that
changes the text cannot leave stale citations behind. The RAG prompt numbers the passages `[1]`,
`[2]`, ... in the order shown; `cite` maps the numbers in an answer back to the chunks, and falls
back to word overlap for small models that answer without markers. This module imports only
`rag.types`, so any layer may use it.
"""

from __future__ import annotations

import re

from rag.types import Answer, Citation, Hit, StageTrace, Usage

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_WORD = re.compile(r"\w+")
# Words too common to say which passage an answer came from.
_STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "had",
    "has", "have", "he", "her", "his", "in", "is", "it", "its", "of", "on", "or", "she", "that",
    "the", "their", "there", "they", "this", "to", "was", "were", "what", "when", "where",
    "which", "who", "whom", "why", "will", "with", "you", "your", "i", "not", "no", "yes",
    "answer", "passage", "passages", "question",
])


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


def build_answer(
    query: str, text: str, *, sources: list[Citation], hits: list[Hit], usage: Usage,
    supported: bool | None = None, agreement: float | None = None,
    trace: list[StageTrace] | None = None,
) -> Answer:
    """The answer to `query`: `text` as the stages left it, citing the `sources` it refers to."""
    return Answer(query=query, text=text, citations=cite(text, sources, hits), sources=sources,
                  usage=usage, supported=supported, agreement=agreement, trace=trace or [])
