"""Fixed windows of the encoder's own tokens, with overlap, mapped back to character spans."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import Field, model_validator

from rag.chunkers.base import Chunker, check_window, windows
from rag.models import resolve_model
from rag.registry import ComponentConfig, register
from rag.types import Document


@register("chunker", "fixed_tokens")
class FixedTokenChunker(Chunker):
    """Windows of `size` tokens starting every `size - overlap` tokens.

    Counting the encoder's tokens (not words or characters) makes every chunk fit the encoder's
    window exactly, so nothing is silently truncated at embedding time.
    """

    class Config(ComponentConfig):
        size: int = Field(default=200, description="tokens per chunk")
        overlap: int = Field(default=0, description="tokens shared by consecutive chunks")
        tokenizer: str = Field(default="encoder", description="model whose tokenizer counts")

        @model_validator(mode="after")
        def _check(self) -> FixedTokenChunker.Config:
            check_window(self.size, self.overlap, "tokens")
            return self

    config: Config

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolve_model(self.config.tokenizer))

    def spans(self, doc: Document) -> list[tuple[int, int]]:
        offsets = self.tokenizer(
            doc.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )["offset_mapping"]
        if not offsets:
            return [(0, len(doc.text))]
        return [(offsets[a][0], offsets[b - 1][1])
                for a, b in windows(len(offsets), self.config.size, self.config.overlap)]
