"""The compressor interface: shrink each query's passages to 1/ratio of their tokens.

Compressors return the same hits (ids, titles, scores kept, so citations still resolve) with
shorter text. With an empty question a compressor works on the passage alone
(`compress_passages`): the form that can be compressed once at index time and then have its KV
cache precomputed, since it no longer depends on the query. Only passages are compressed: the
instructions and the question are built later by the prompt stage and never touched. Tokens
are counted with one tokenizer (`tokenizer`, by default the `tiny` generator's) before and after,
so the reported ratio is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from pydantic import BaseModel, Field, field_validator

from rag.registry import Component, ComponentConfig
from rag.types import Chunk, Hit


class CompressorConfig(ComponentConfig):
    ratio: float = Field(default=2.0, description="target original / kept tokens, 1 < ratio < 100")
    tokenizer: str = Field(default="tiny", description="model whose tokenizer counts tokens")

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if not 1.0 < value < 100.0:
            raise ValueError(f"ratio must be above 1 and below 100, got {value}")
        return value


class Compressed(BaseModel):
    """One query's compressed passages and what the compression achieved."""

    hits: list[Hit]
    original_tokens: int
    kept_tokens: int

    @property
    def ratio(self) -> float:
        return self.original_tokens / max(self.kept_tokens, 1)


def with_text(hit: Hit, text: str) -> Hit:
    return hit.model_copy(update={"chunk": hit.chunk.model_copy(update={"text": text})})


class Compressor(Component):
    """Base of compressors."""

    kind = "compressor"
    Config = CompressorConfig
    config: CompressorConfig

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        from rag.models import resolve_model

        return AutoTokenizer.from_pretrained(resolve_model(self.config.tokenizer))

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def budget(self, hits: Sequence[Hit]) -> tuple[int, int]:
        """(original tokens, tokens to keep) for one query's passages."""
        original = sum(self.count(h.chunk.text) for h in hits)
        return original, max(1, round(original / self.config.ratio))

    def compress(self, queries: Sequence[str], hits: Sequence[Sequence[Hit]]) -> list[Compressed]:
        raise NotImplementedError

    def compress_passages(self, chunks: Sequence[Chunk], batch_size: int = 256,
                          progress: bool = True) -> list[Chunk]:
        """Each chunk compressed on its own, without a question, to 1/ratio of its tokens: index
        time work whose result serves every query (and can be cached as KV)."""
        from tqdm.auto import tqdm

        out: list[Chunk] = []
        for start in tqdm(range(0, len(chunks), batch_size), desc="compressing chunks",
                          disable=not progress or len(chunks) <= batch_size):
            batch = chunks[start : start + batch_size]
            alone = [[Hit(chunk=c, score=0.0, retriever="index")] for c in batch]
            done = self.compress([""] * len(batch), alone)
            out += [c.hits[0].chunk if c.hits else chunk for c, chunk in zip(done, batch)]
        return out
