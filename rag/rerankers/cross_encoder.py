"""Cross-encoder reranking: a sequence-classification model reads query and passage together."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from pydantic import Field

from rag.registry import ComponentConfig, register
from rag.rerankers.base import Reranker, passage_text, rescored
from rag.types import Hit


UNTRAINED_MAX_WORDS = 200  # for checkpoints not trained by `rag train-reranker`


@register("reranker", "cross-encoder")
class CrossEncoderReranker(Reranker):
    """Any HF sequence-classification checkpoint through sentence-transformers' `CrossEncoder`."""

    class Config(ComponentConfig):
        model: str = Field(description="a local folder or a cached HF id")
        batch_size: int = Field(default=32, ge=1)
        max_words: int | None = Field(default=None, ge=1, description=(
            "passage words shown to the model; default: what `rag train-reranker` trained it with "
            f"(its training.json), else {UNTRAINED_MAX_WORDS}"))
        device: str | None = None

    config: Config

    @cached_property
    def model(self) -> Any:
        from sentence_transformers import CrossEncoder

        from rag.models import resolve_model

        return CrossEncoder(str(resolve_model(self.config.model)), device=self.config.device)

    @cached_property
    def max_words(self) -> int:
        from rag.models import resolve_model

        if self.config.max_words is not None:
            return self.config.max_words
        trained = resolve_model(self.config.model) / "training.json"
        found = json.loads(trained.read_text()).get("max_words") if trained.is_file() else None
        return found or UNTRAINED_MAX_WORDS

    def rerank(self, queries: Sequence[str], hits: Sequence[Sequence[Hit]]) -> list[list[Hit]]:
        self.check(queries, hits)
        pairs = [(q, passage_text(h, self.max_words)) for q, hs in zip(queries, hits) for h in hs]
        flat = self.model.predict(
            pairs, batch_size=self.config.batch_size, show_progress_bar=len(pairs) > 256
        ) if pairs else []
        out, start = [], 0
        for hs in hits:
            out.append(rescored(hs, [float(s) for s in flat[start : start + len(hs)]], self.name))
            start += len(hs)
        return out
