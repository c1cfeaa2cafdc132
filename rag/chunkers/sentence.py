"""Sentence chunks from pysbd, a rule-based splitter that knows abbreviations ("Dr.", "U.S."),
decimals ("2.5%") and quotations; spans are located in the original text, so they are exact."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import Field, model_validator

from rag.chunkers.base import Chunker, check_window, windows
from rag.registry import ComponentConfig, register
from rag.types import Document


def sentence_spans(segmenter: Any, text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, trailing white space excluded."""
    spans, cursor = [], 0
    for sentence in segmenter.segment(text):
        stripped = sentence.strip()
        if not stripped:
            continue
        start = text.find(stripped, cursor)
        if start < 0:  # the splitter altered the text: give the rest as one span
            spans.append((cursor, len(text.rstrip())))
            break
        spans.append((start, start + len(stripped)))
        cursor = start + len(stripped)
    return spans


@register("chunker", "sentences")
class SentenceChunker(Chunker):
    """Groups of `sentences` consecutive sentences, consecutive groups sharing `overlap`."""

    class Config(ComponentConfig):
        sentences: int = Field(default=1, description="sentences per chunk")
        overlap: int = Field(default=0, description="sentences shared by consecutive chunks")
        language: str = "en"

        @model_validator(mode="after")
        def _check(self) -> SentenceChunker.Config:
            check_window(self.sentences, self.overlap, "sentences")
            return self

    config: Config

    @cached_property
    def segmenter(self) -> Any:
        import pysbd

        return pysbd.Segmenter(language=self.config.language, clean=False)

    def spans(self, doc: Document) -> list[tuple[int, int]]:
        sentences = sentence_spans(self.segmenter, doc.text)
        return [(sentences[a][0], sentences[b - 1][1])
                for a, b in windows(len(sentences), self.config.sentences, self.config.overlap)]
