"""Pipeline stages that answer from precomputed caches (or by full prefill): retrieved chunks
(`kv_generate`) and selected demonstrations (`kv_icl_generate`)."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from pydantic import Field

from rag.errors import ConfigError
from rag.generators.base import LocalGenerator
from rag.kvcache.demos import demo_chunks, demo_frame
from rag.kvcache.reuse import ChunkKV, Frame, Layout, Mode
from rag.kvcache.store import StoreDtype
from rag.pipeline import Stage, Writes
from rag.prompts.templates import RAG_SYSTEM
from rag.registry import ComponentConfig, register
from rag.selectors.prompt import DemoTemplate, Order, ordered
from rag.state import View
from rag.types import Chunk, Citation, Generation, Prompt, SamplingParams, Usage


class CachedPieces(Stage):
    """What both stages share: the store, the mode, and the two engines.

    `mode` switches between `full` prefill, `reuse` and `recompute` (CacheBlend, with
    `recompute_fraction` of cached tokens); `link_tokens` (LegoLink) and `recompute_last` add
    fixed repairs, `ape_temperature` and `ape_scale` APE's attention correction. With a `vllm`
    generator the batch's requests go to the engine together and its KV connector loads the
    caches (`full` or `reuse`, with `recompute_last`: the connector loads all pieces but the
    last ones and vLLM prefills the rest; tokens inside the loaded span cannot be recomputed
    through vLLM's connector API). The trace records prompt tokens, reused tokens
    and, on the transformers path, prefill seconds.
    """

    nested = {"generator": "generator"}

    class Config(ComponentConfig):
        generator: dict[str, Any] = Field(default_factory=lambda: {"type": "transformers"})
        store: str = Field(description="KV store folder (built by ChunkKV.build)")
        mode: Mode = "reuse"
        recompute_fraction: float = Field(default=0.15, ge=0, le=1)
        link_tokens: int = Field(default=0, ge=0, description="LegoLink: first tokens of each "
                                 "chunk recomputed (transformers only)")
        recompute_last: int = Field(default=1, ge=0, description="how many of the last pieces, "
                                    "next to the query, are prefilled in full: pieces that never "
                                    "saw each other lose answers, and the best-ranked ones read "
                                    "in place win most of them back (docs/benchmarks.md)")
        ape_temperature: float = Field(default=1.0, gt=0, description="APE: attention "
                                       "temperature on the cached pieces (transformers only)")
        ape_scale: float = Field(default=1.0, gt=0, description="APE: weight of the cached "
                                 "pieces' attention (transformers only)")
        dtype: StoreDtype = "float16"
        params: SamplingParams = Field(default_factory=SamplingParams)

        def prefill_kwargs(self, last: int | None = None) -> dict[str, Any]:
            """`ChunkKV.prefill` keyword arguments for this configuration, naming only the
            repairs it turns on (so a benchmark row can be matched to a configuration); `last`
            stands for a `recompute_last` the stage resolved from its store."""
            kwargs: dict[str, Any] = {"mode": self.mode}
            if self.mode == "recompute":
                kwargs["fraction"] = self.recompute_fraction
            if self.link_tokens:
                kwargs["link"] = self.link_tokens
            last = self.recompute_last if last is None else last
            if last:
                kwargs["last"] = last
            if (self.ape_temperature, self.ape_scale) != (1.0, 1.0):
                kwargs["ape"] = (self.ape_temperature, self.ape_scale)
            return kwargs

    config: Config
    generator: LocalGenerator

    def __init__(self, store: str, generator: Any = None, **kwargs: Any) -> None:
        if isinstance(generator, dict) and generator.get("type") == "vllm":
            generator = {**generator, "kv_connector": True}  # the engine must load the caches
        super().__init__(store=store, generator=generator, **kwargs)

    def frame(self) -> str | Frame:
        """The fixed text around the pieces (a RAG system prompt, or a whole `Frame`)."""
        raise NotImplementedError

    def pieces(self, item: View) -> list[Chunk]:
        """The cached pieces of this state's prompt, in prompt order."""
        raise NotImplementedError

    def extra_writes(self, item: View) -> Writes:
        """The writes beside prompt, generation and text (the passages a RAG prompt shows)."""
        return {}

    @cached_property
    def kv(self) -> ChunkKV:
        return ChunkKV(self.generator, self.config.store, self.frame(), self.config.dtype)

    def recompute_last(self) -> int:
        """How many of the last pieces are prefilled in full."""
        return self.config.recompute_last

    def run(self, batch: list[View]) -> list[Writes]:
        if self.generator.loads_kv:
            return self._run_vllm(batch)
        out = []
        for item in batch:
            began = time.perf_counter()
            prefilled, layout = self.kv.prefill(item.query, self.pieces(item),
                                                **self.config.prefill_kwargs(self.recompute_last()))
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
        cfg = self.config
        if cfg.mode == "recompute" or cfg.link_tokens or (cfg.ape_temperature, cfg.ape_scale) != (1, 1):
            raise ConfigError(f"{self.name} with a vllm generator runs mode full or reuse (with "
                              "recompute_last): CacheBlend and LegoLink recompute tokens inside "
                              "the cached span, APE changes the attention kernel; they need the "
                              "transformers generator")
        requests = [self.kv.request(item.query, self.pieces(item), self.recompute_last())
                    for item in batch]
        transfers = None if self.config.mode == "full" else [t for _, t in requests]
        generations = self.generator.generate_ids([layout.ids for layout, _ in requests],
                                                  self.config.params, transfers)
        return [self._writes(item, layout, generation, {})
                for item, (layout, _), generation in zip(batch, requests, generations)]

    def _writes(self, item: View, layout: Layout, generation: Generation,
                trace: dict[str, Any]) -> Writes:
        usage = generation.usage
        return {
            "prompt": Prompt(text=self.generator.tokenizer.decode(layout.ids)),
            "generation": generation,
            "text": generation.text.strip(),
            **self.extra_writes(item),
            "trace": {"mode": self.config.mode, "prompt_tokens": usage.prompt_tokens,
                      "cached_prompt_tokens": usage.cached_prompt_tokens, **trace},
        }


@register("stage", "kv_generate")
class KVGenerate(CachedPieces):
    """Retrieved chunks' caches from the store, the question prefilled, then decoding.

    The best-ranked chunk goes last, next to the question, as in `rag_prompt`.
    """

    reads = ("query", "hits")
    writes = ("prompt", "sources", "generation", "text")

    class Config(CachedPieces.Config):
        system: str = RAG_SYSTEM

    config: Config

    def frame(self) -> str:
        return self.config.system

    def pieces(self, item: View) -> list[Chunk]:
        return [h.chunk for h in item.hits[::-1]]

    def extra_writes(self, item: View) -> Writes:
        return {"sources": [Citation.of(i, h.chunk) for i, h in enumerate(item.hits[::-1], 1)]}


@register("stage", "kv_icl_generate")
class KVIclGenerate(CachedPieces):
    """Selected demonstrations' caches from a store built with `demo_frame(template)` (situated
    by `situated_context`, best), the query prefilled: `select -> kv_icl_generate` answers as
    `select -> icl_prompt -> generate` (plain style) does, without prefilling the
    demonstrations."""

    reads = ("query", "demos")
    writes = ("prompt", "generation", "text")

    class Config(CachedPieces.Config):
        template: DemoTemplate = Field(default_factory=DemoTemplate)
        order: Order = Field(default="similar_last",
                             description="similar_last: best demonstration next to the query")
        recompute_last: int | None = Field(default=None, ge=0, description="how many of the "
                                           "last demonstrations are prefilled in full; by default "
                                           "0 over a situated store, 3 over a plain one, where a "
                                           "label rests on all of them (docs/benchmarks.md)")

    config: Config
    #: `recompute_last` when the configuration leaves it out, by the kind of store
    DEFAULT_LAST = {"situated": 0, "plain": 3}

    def recompute_last(self) -> int:
        if self.config.recompute_last is not None:
            return self.config.recompute_last
        return self.DEFAULT_LAST["situated" if self.kv.store.manifest.get("situated") else "plain"]

    def frame(self) -> Frame:
        return demo_frame(self.config.template)

    def pieces(self, item: View) -> list[Chunk]:
        return demo_chunks(self.config.template, ordered(item.demos, self.config.order))
