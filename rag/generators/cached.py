"""A generator that replays completions it has made before, from a file on disk.

Keyed by the wrapped generator's spec and model fingerprint, the prompt and the sampling
parameters, so several pipelines that differ only after generation (pickers over the same ten
samples, say) pay for the samples once, and a changed model, prompt or temperature never hits.
The file is JSON lines, appended and fsynced after every call; a torn last line is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import AsyncIterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from rag.generators.base import Generator, PromptLike, as_prompt
from rag.models import model_fingerprint
from rag.registry import ComponentConfig, register
from rag.types import Generation, SamplingParams, TextDelta


@register("generator", "cached")
class CachedGenerator(Generator):
    """`generate` answers from `path` where it can and asks `generator` for the rest."""

    nested = {"generator": "generator"}

    class Config(ComponentConfig):
        generator: dict[str, Any]
        path: str

    config: Config

    generator: Generator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    @cached_property
    def _identity(self) -> dict[str, Any]:
        model = getattr(self.generator.config, "model", None)
        return {"spec": self.generator.spec(), "dtype": self.generator.dtype,
                "model": model_fingerprint(model) if isinstance(model, str) else None}

    @property
    def dtype(self) -> str | None:
        return self.generator.dtype

    def _key(self, prompt: PromptLike, params: SamplingParams) -> str:
        payload = {**self._identity, "prompt": as_prompt(prompt).model_dump(mode="json"),
                   "params": params.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @cached_property
    def _stored(self) -> dict[str, Generation]:
        path, stored = Path(self.config.path), {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    stored[row["key"]] = Generation.model_validate(row["generation"])
                except (ValueError, KeyError):
                    continue  # a line torn by an interrupted run
        return stored

    def _save(self, rows: dict[str, Generation]) -> None:
        path = Path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            for key, generation in rows.items():
                f.write(json.dumps({"key": key, "generation": generation.model_dump(mode="json")}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._stored.update(rows)

    def generate(self, prompts: Sequence[PromptLike], params: SamplingParams | None = None) -> list[Generation]:
        params = params or SamplingParams()
        keys = [self._key(p, params) for p in prompts]
        with self._lock:
            missing = {k: p for k, p in zip(keys, prompts) if k not in self._stored}
        if missing:
            made = self.generator.generate(list(missing.values()), params)
            with self._lock:
                self._save(dict(zip(missing, made)))
        return [self._stored[k] for k in keys]

    async def stream(self, prompt: PromptLike, params: SamplingParams | None = None) -> AsyncIterator[TextDelta]:
        async for delta in self.generator.stream(prompt, params):
            yield delta

    def score(self, prompts: Sequence[PromptLike], continuations: Sequence[str]) -> list[list[float]]:
        return self.generator.score(prompts, continuations)

    def next_token_logprobs(self, prompts: Sequence[PromptLike], options: Sequence[str]) -> list[list[float]]:
        return self.generator.next_token_logprobs(prompts, options)

    @property
    def model_name(self) -> str:
        return self.generator.model_name
