"""Cross-encoder reranking: a sequence-classification model reads query and passage together."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field

from rag.errors import ModelLoadError
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
    def folder(self) -> Path:
        """The model's local folder: its weights and, when trained here, its training.json."""
        from rag.models import resolve_model

        return resolve_model(self.config.model)

    @cached_property
    def model(self) -> Any:
        from sentence_transformers import CrossEncoder

        try:
            return CrossEncoder(str(self.folder), device=self.config.device)
        except Exception as exc:  # transformers and safetensors raise many types for a bad folder
            raise ModelLoadError(f"cross-encoder folder {self.folder} cannot be loaded ({type(exc).__name__}: "
                                 f"{exc}); retrain it with `rag train-reranker` or restore the folder") from exc

    @cached_property
    def max_words(self) -> int:
        if self.config.max_words is not None:
            return self.config.max_words
        trained = self.folder / "training.json"
        if not trained.is_file():
            return UNTRAINED_MAX_WORDS
        try:
            return int(json.loads(trained.read_text())["max_words"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{trained} is damaged ({exc!r}); retrain with `rag train-reranker`, "
                                 "or set the reranker's max_words") from exc

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
