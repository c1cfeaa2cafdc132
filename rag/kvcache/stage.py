"""The pipeline stage that answers from precomputed chunk caches (or by full prefill)."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from pydantic import Field

from rag.errors import ConfigError
from rag.generators.vllm import VLLMGenerator
from rag.kvcache.reuse import ChunkKV, Layout, Mode
from rag.kvcache.store import StoreDtype
from rag.pipeline import Stage, Writes
from rag.prompts.citations import answer_for
from rag.prompts.templates import RAG_SYSTEM
from rag.registry import ComponentConfig, build, register
from rag.state import View
from rag.types import Citation, Generation, Prompt, SamplingParams, Usage


@register("stage", "kv_generate")
class KVGenerate(Stage):
    """Retrieved chunks' caches from the store, the question prefilled, then decoding.

    `mode` switches between `full` prefill, `reuse` and `recompute` (CacheBlend, with
    `recompute_fraction` of chunk tokens). The best-ranked chunk goes last, next to the question,
    as in `rag_prompt`. The trace records prompt tokens, reused tokens and prefill seconds.
    With a `vllm` generator (`kv_connector: true`) the batch's requests go to the engine together
    and the chunk caches are loaded by its KV connector (`full` or `reuse`; CacheBlend's per-layer
    token selection has no hook in vLLM's connector API).
    """

    reads = ("query", "hits")
    writes = ("prompt", "sources", "generation", "answer")
    nested = ("generator",)

    class Config(ComponentConfig):
        generator: dict[str, Any] = Field(default_factory=lambda: {"type": "transformers"})
        store: str = Field(description="chunk KV store folder (built by ChunkKV.build)")
        mode: Mode = "reuse"
        recompute_fraction: float = Field(default=0.15, ge=0, le=1)
        system: str = RAG_SYSTEM
        dtype: StoreDtype = "float16"
        params: SamplingParams = Field(default_factory=SamplingParams)

    config: Config

    def __init__(self, store: str, generator: Any = None, **kwargs: Any) -> None:
        spec = generator or {"type": "transformers"}
        if isinstance(spec, dict) and spec.get("type") == "vllm":
            spec = {**spec, "kv_connector": True}  # the engine must load the chunk caches
        self.generator = build("generator", spec)
        super().__init__(store=store, generator={"type": self.generator.name}, **kwargs)

    @cached_property
    def kv(self) -> ChunkKV:
        return ChunkKV(self.generator, self.config.store, self.config.system, self.config.dtype)

    def run(self, batch: list[View]) -> list[Writes]:
        if isinstance(self.generator, VLLMGenerator):
            return self._run_vllm(batch)
        out = []
        for item in batch:
            hits = item.hits[::-1]
            began = time.perf_counter()
            prefilled, layout = self.kv.prefill(item.query, [h.chunk for h in hits],
                                                self.config.mode, self.config.recompute_fraction)
            prefill_s = time.perf_counter() - began
            completion = self.kv.decode(prefilled, layout, self.config.params)
            reused = 0 if self.config.mode == "full" else (
                layout.prefix + sum(layout.chunk_lengths) - prefilled.recomputed)
            usage = Usage(prompt_tokens=len(layout.ids), completion_tokens=len(completion.token_ids),
                          cached_prompt_tokens=reused)
            out.append(self._writes(item, layout, Generation(completions=[completion], usage=usage),
                                    {"prefill_s": round(prefill_s, 4)}))
        return out

    def _run_vllm(self, batch: list[View]) -> list[Writes]:
        if self.config.mode == "recompute":
            raise ConfigError("kv_generate with a vllm generator runs mode full or reuse: "
                              "CacheBlend recompute needs the transformers generator")
        requests = [self.kv.request(item.query, [h.chunk for h in item.hits[::-1]])
                    for item in batch]
        transfers = None if self.config.mode == "full" else [t for _, t in requests]
        generations = self.generator.generate_ids([layout.ids for layout, _ in requests],
                                                  self.config.params, transfers)
        return [self._writes(item, layout, generation, {})
                for item, (layout, _), generation in zip(batch, requests, generations)]

    def _writes(self, item: View, layout: Layout, generation: Generation,
                trace: dict[str, Any]) -> Writes:
        hits = item.hits[::-1]
        sources = [Citation(number=i, chunk_id=h.chunk.id, doc_id=h.chunk.doc_id,
                            title=h.chunk.title) for i, h in enumerate(hits, 1)]
        usage = generation.usage
        return {
            "prompt": Prompt(text=self.generator.tokenizer.decode(layout.ids)),
            "sources": sources,
            "generation": generation,
            "answer": answer_for(item.query, generation.completions[0].text, sources, item.hits,
                                 usage),
            "trace": {"mode": self.config.mode, "prompt_tokens": usage.prompt_tokens,
                      "cached_prompt_tokens": usage.cached_prompt_tokens, **trace},
        }
