"""Recursive splitting: cut at the coarsest separator that yields pieces within the token budget,
then merge neighbouring pieces back up to the budget (the LangChain/LlamaIndex recipe, on spans)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import Field

from rag.chunkers.base import Chunker
from rag.models import resolve_model
from rag.registry import ComponentConfig, register
from rag.types import Document

Span = tuple[int, int]


@register("chunker", "recursive")
class RecursiveChunker(Chunker):
    """Chunks of at most `size` tokens, split at paragraphs, then lines, sentences, words."""

    class Config(ComponentConfig):
        size: int = Field(default=200, gt=0, description="token budget per chunk")
        separators: list[str] = Field(default_factory=lambda: ["\n\n", "\n", ". ", " "])
        tokenizer: str = Field(default="encoder", description="model whose tokenizer counts")

    config: Config

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolve_model(self.config.tokenizer))

    def _tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def _split(self, text: str, span: Span, separators: list[str]) -> list[Span]:
        start, end = span
        if self._tokens(text[start:end]) <= self.config.size or not separators:
            return [span]  # fits, or nothing left to cut at (a single over-long word)
        separator, rest = separators[0], separators[1:]
        pieces, cursor = [], start
        while (cut := text.find(separator, cursor, end)) >= 0:
            pieces.append((cursor, cut + len(separator)))  # the separator stays with its left piece
            cursor = cut + len(separator)
        pieces.append((cursor, end))
        pieces = [p for p in pieces if p[1] > p[0]]
        if len(pieces) == 1:
            return self._split(text, span, rest)
        return [s for p in pieces for s in self._split(text, p, rest)]

    def spans(self, doc: Document) -> list[Span]:
        text = doc.text
        merged: list[Span] = []
        for piece in self._split(text, (0, len(text)), self.config.separators):
            if merged and self._tokens(text[merged[-1][0] : piece[1]]) <= self.config.size:
                merged[-1] = (merged[-1][0], piece[1])
            else:
                merged.append(piece)
        trimmed = []
        for start, end in merged:  # no leading or trailing white space inside a chunk
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end > start:
                trimmed.append((start, end))
        return trimmed
