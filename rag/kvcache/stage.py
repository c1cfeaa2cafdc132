"""The pipeline stage that answers from precomputed chunk caches (or by full prefill)."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from pydantic import Field

from rag.kvcache.reuse import ChunkKV, Mode
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
        self.generator = build("generator", generator or {"type": "transformers"})
        super().__init__(store=store, generator={"type": self.generator.name}, **kwargs)

    @cached_property
    def kv(self) -> ChunkKV:
        return ChunkKV(self.generator, self.config.store, self.config.system, self.config.dtype)

    def run(self, batch: list[View]) -> list[Writes]:
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
            sources = [Citation(number=i, chunk_id=h.chunk.id, doc_id=h.chunk.doc_id,
                                title=h.chunk.title) for i, h in enumerate(hits, 1)]
            out.append({
                "prompt": Prompt(text=self.generator.tokenizer.decode(layout.ids)),
                "sources": sources,
                "generation": Generation(completions=[completion], usage=usage),
                "answer": answer_for(item.query, completion.text, sources, item.hits, usage),
                "trace": {"mode": self.config.mode, "prompt_tokens": len(layout.ids),
                          "cached_prompt_tokens": reused, "prefill_s": round(prefill_s, 4)},
            })
        return out
