"""Answering from precomputed chunk caches: prompt layout, assembly, prefill modes, decoding.

The prompt is the chat template around fixed pieces, tokenized piece by piece so that the same
token ids serve every mode: [system prefix][chunk 1]...[chunk n][question + answer prompt]. The
prefix and each chunk's cache come from the store; chunk keys are re-rotated from the position
they were encoded at (right after the prefix) to where they sit in this prompt, all chunks and
layers in one operation. Three modes, chosen per call:
- `full`: an ordinary prefill of every token (the reference);
- `reuse`: only the question is prefilled, over the assembled cache (chunks never attend to one
  another: TurboRAG / Block-Attention without their fine-tuning);
- `recompute`: CacheBlend, a fraction of chunk tokens recomputed to restore cross-chunk attention.

With a transformers generator all three run here, on hand-run decoder layers. With a vLLM
generator (started with `kv_connector: true`) `full` and `reuse` run inside the engine: `request`
gives the prompt's token ids and the KV-connector parameters that load its chunks' caches
(`rag.kvcache.connector`); the store is still built here, by the same model under transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from rag.compression.base import Compressor
from rag.errors import RagError
from rag.generators.base import LocalGenerator, truncate_at_stop
from rag.generators.transformers import TransformersGenerator
from rag.kvcache.blend import Prefilled, ape_decode_step, blended_prefill
from rag.kvcache.rope import inv_freq
from rag.kvcache.store import ChunkKVStore, StoreDtype, build_store, model_shape, stacked_kv
from rag.types import Chunk, Completion, Message, Prompt, SamplingParams

Mode = Literal["full", "reuse", "recompute"]
_CHUNKS, _QUESTION = "\x00chunks\x00", "\x00question\x00"


def chunk_text(chunk: Chunk) -> str:
    return f"{chunk.title}\n{chunk.text}\n\n" if chunk.title else f"{chunk.text}\n\n"


@dataclass(frozen=True)
class Frame:
    """The fixed text around the cached pieces: `prefix`, the pieces, then `before` + the query +
    `after`. `raw` text gets the tokenizer's special tokens (a BOS) at its start; a rendered chat
    template holds its own."""

    prefix: str
    before: str
    after: str
    raw: bool = False


def rag_frame(generator: LocalGenerator, system: str) -> Frame:
    """The chat prompt of `rag_prompt`: the system message, then passages and the question."""
    rendered = generator.render(Prompt(messages=[
        Message(role="system", content=system),
        Message(role="user", content=f"Passages:\n{_CHUNKS}Question: {_QUESTION}"),
    ]))
    prefix, rest = rendered.split(_CHUNKS)
    before, after = rest.split(_QUESTION)
    return Frame(prefix=prefix, before=before, after=after)


@dataclass
class Layout:
    """The token ids of one prompt and where its chunks sit."""

    ids: list[int]
    prefix: int  # tokens of the system prefix
    chunk_lengths: list[int]


class ChunkKV:
    """A model, its chunk store, and the prompt pieces both must agree on."""

    def __init__(self, generator: LocalGenerator, store: str | Path, system: str | Frame,
                 dtype: StoreDtype = "float16") -> None:
        """`system`: the RAG system prompt, or the whole `Frame` (demonstrations: `demo_frame`)."""
        self.generator, self.store_path, self.dtype = generator, Path(store), dtype
        self.frame = system if isinstance(system, Frame) else rag_frame(generator, system)

    @property
    def model(self) -> Any:
        """The transformers model that builds stores and prefills by hand."""
        if not isinstance(self.generator, TransformersGenerator):
            raise RagError(f"building a chunk KV store or prefilling by hand needs the transformers "
                           f"generator, not {self.generator.name!r}; vLLM loads a built store "
                           "through its KV connector (ChunkKV.request)")
        return self.generator.model

    def _encode(self, text: str) -> list[int]:
        return self.generator.tokenizer.encode(text, add_special_tokens=False)

    @cached_property
    def prefix_ids(self) -> list[int]:
        return self.generator.tokenizer.encode(self.frame.prefix, add_special_tokens=self.frame.raw)

    @cached_property
    def shape(self) -> dict[str, Any]:
        from transformers import AutoConfig

        path = self.generator.model_path
        return model_shape(AutoConfig.from_pretrained(path), str(path))

    def build(self, chunks: Sequence[Chunk], progress: bool = True,
              compressor: Compressor | None = None,
              context: Mapping[str, Sequence[Chunk]] | None = None) -> ChunkKVStore:
        """Precompute and save the cache of every chunk (index time). With a `compressor` each
        chunk is first compressed on its own, without a question, and its compressed text is what
        is cached and what every prompt then shows (the manifest records the compression). With
        a `context`, a chunk is encoded after the pieces it names for it (a situated cache:
        `rag.kvcache.demos.situated_context`); only the chunk's own keys and values are kept."""
        frequencies = inv_freq(self.model)  # refuses unsupported models before the long part
        compression = None
        if compressor is not None:
            original = sum(len(self._encode(chunk_text(c))) for c in chunks)
            chunks = compressor.compress_passages(chunks, progress=progress)
        ids = {c.id: self._encode(chunk_text(c)) for c in chunks}
        if compressor is not None:
            compression = {"compressor": compressor.spec(), "original_tokens": original,
                           "kept_tokens": sum(len(i) for i in ids.values())}
        contexts = situated = None
        if context:
            contexts = {c: [i for piece in context.get(c, [])
                            for i in self._encode(chunk_text(piece))] for c in ids}
            situated = {"context_pieces": max(len(pieces) for pieces in context.values())}
        store = build_store(self.model, frequencies, self.shape, self.prefix_ids, list(ids.items()),
                            self.store_path, dtype=self.dtype, progress=progress,
                            compression=compression, contexts=contexts, situated=situated)
        self.__dict__["store"] = store
        return store

    @cached_property
    def store(self) -> ChunkKVStore:
        return ChunkKVStore(self.store_path, self.shape, self.dtype, self.prefix_ids)

    def layout(self, question: str, chunks: Sequence[Chunk]) -> Layout:
        """The prompt of these chunks as the store holds them (compressed, if it was built so)."""
        return self._layout(question, [self.store.get(c.id)[2] for c in chunks])

    def text_layout(self, question: str, chunks: Sequence[Chunk]) -> Layout:
        """The same prompt with the chunks' own texts, no store needed: what a full prefill of
        the passages as retrieved reads (the reference for a compressed store)."""
        return self._layout(question, [self._encode(chunk_text(c)) for c in chunks])

    def _layout(self, question: str, parts: list[list[int]]) -> Layout:
        tail = self._encode(f"{self.frame.before}{question}{self.frame.after}")
        return Layout(ids=[*self.prefix_ids, *(i for p in parts for i in p), *tail],
                      prefix=len(self.prefix_ids), chunk_lengths=[len(p) for p in parts])

    def request(self, question: str, chunks: Sequence[Chunk], last: int = 0
                ) -> tuple[Layout, dict[str, Any]]:
        """The prompt's layout and the KV-connector parameters that load its chunks' caches in
        vLLM (all but the `last` chunks, which vLLM then prefills in full); the prompt is
        checked against the store here, so a mismatch fails loudly."""
        from rag.kvcache.connector import transfer_params

        layout = self.layout(question, chunks)
        ids = [c.id for c in chunks][: max(0, len(chunks) - last)]
        self.store.covered(layout.ids, ids)
        return layout, transfer_params(self.store_path.resolve(), ids)

    def prefill(self, question: str, chunks: Sequence[Chunk], mode: Mode = "reuse",
                fraction: float = 0.15, link: int = 0, last: int = 0,
                ape: tuple[float, float] | None = None) -> tuple[Prefilled, Layout]:
        """The whole prompt's cache and next-token logits, by the chosen mode, with optional
        repairs recomputed in every layer: the first `link` tokens of each chunk after the first
        (EPIC's LegoLink: each chunk prefilled alone grew its own attention sink there; the first
        chunk was encoded in place) and the `last` chunks, next to the question, in full; and
        `ape` = (temperature, scale), APE's attention to the chunks for the tokens after them."""
        import torch

        layout = self.layout(question, chunks)
        if mode == "full":
            with torch.inference_mode():
                out = self.model(torch.tensor([layout.ids]), use_cache=True)
            keys, values = stacked_kv(out.past_key_values, 0)
            return Prefilled(keys=list(keys), values=list(values), logits=out.logits[0, -1],
                             recomputed=sum(layout.chunk_lengths)), layout
        if mode not in ("reuse", "recompute"):
            raise RagError(f"unknown prefill mode {mode!r}: full, reuse or recompute")
        keys, values = self.store.assemble([c.id for c in chunks], inv_freq(self.model),
                                           next(self.model.parameters()).dtype)
        mask = torch.zeros(keys.shape[3], dtype=torch.bool)
        mask[layout.prefix:] = True
        always = torch.zeros_like(mask)
        starts = [layout.prefix + sum(layout.chunk_lengths[:i]) for i in range(len(chunks))]
        for i, (start, length) in enumerate(zip(starts, layout.chunk_lengths)):
            if i >= len(chunks) - last:
                always[start : start + length] = True
            elif i > 0:
                always[start : start + min(link, length)] = True
        prefilled = blended_prefill(self.model, layout.ids, keys, values, mask,
                                    fraction if mode == "recompute" else 0.0, always=always,
                                    ape=ape if ape and ape != (1.0, 1.0) else None)
        return prefilled, layout

    def decode(self, prefilled: Prefilled, layout: Layout, params: SamplingParams) -> Completion:
        """Continue from the assembled cache with the usual sampling parameters."""
        import torch
        from transformers import DynamicCache

        if params.n != 1:
            raise RagError("KV reuse decodes one completion per prompt: use n=1")
        cache = DynamicCache(ddp_cache_data=list(zip(prefilled.keys, prefilled.values)))
        generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        eos = self.generator.tokenizer.eos_token_id
        logits, position, tokens, logprob = prefilled.logits, len(layout.ids), [], 0.0
        finish = "length"
        for _ in range(params.max_tokens):
            token = _pick(logits, params, generator)
            logprob += float(torch.log_softmax(logits.float(), -1)[token])
            if token == eos:
                finish = "stop"
                break
            tokens.append(token)
            text, stopped = truncate_at_stop(self.generator.tokenizer.decode(tokens), params.stop)
            if stopped:
                return Completion(text=text, token_ids=tokens, logprob=logprob, finish_reason="stop")
            if prefilled.ape:  # APE's attention holds for generated tokens too: layers by hand
                prefilled = ape_decode_step(self.model, [*layout.ids, *tokens], prefilled)
                logits = prefilled.logits
            else:
                with torch.inference_mode():
                    logits = self.model(torch.tensor([[token]]), past_key_values=cache,
                                        use_cache=True, position_ids=torch.tensor([[position]])
                                        ).logits[0, -1]
            position += 1
        return Completion(text=self.generator.tokenizer.decode(tokens), token_ids=tokens,
                          logprob=logprob, finish_reason=finish)


def _pick(logits: Any, params: SamplingParams, generator: Any) -> int:
    """Greedy at temperature 0, else nucleus sampling at the given temperature."""
    import torch

    if params.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / params.temperature, -1)
    ordered, index = probs.sort(descending=True)
    keep = ordered.cumsum(0) - ordered < params.top_p
    ordered = ordered * keep
    return int(index[torch.multinomial(ordered / ordered.sum(), 1, generator=generator)])
