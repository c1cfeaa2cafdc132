"""Chunk caches inside the vLLM engine, through vLLM's own KV-connector API.

A request names a store and its chunks in `SamplingParams.extra_args["kv_transfer_params"]`
(`{"rag_chunk_kv": {"store": ..., "chunks": [...]}}`, built by `transfer_params`). Its prompt
starts with the store's system prefix and those chunks' tokens, in that order:
- the scheduler half (in the engine process) checks that against the store, then tells vLLM that
  these tokens need no prefill (`get_num_new_matched_tokens`); vLLM allocates their blocks;
- the worker half, before the step's forward pass, assembles the prefix and chunk caches (keys
  re-rotated to their places, `ChunkKVStore.assemble`) and writes them into those paged blocks
  with the attention backend's own cache writer (`do_kv_cache_update`), so the block layout is the
  backend's business, on CPU and on GPU alike. vLLM then prefills only the question.

Tokens that prefix caching already holds are not loaded again (vLLM asks only beyond them), so
the two work together. A block's keys and values depend on what was loaded, not only on its
tokens: each request salts its blocks' hashes (`cache_salt`) with the caches it names, so that
blocks assembled from chunks that never saw each other serve only requests that load the same
chunks (a repeated question over the same passages), never a full-prefill request and never one
that prefills a chunk this one loaded.
A request whose prompt does not match its store (another model, prefix or chunk text) is logged
and prefilled in full: the engine is shared and must not fail; `ChunkKV` refuses such a store
with a named error before the request is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.logger import init_logger
from vllm.model_executor.models.utils import extract_layer_index

from rag.errors import RagError
from rag.kvcache.store import ChunkKVStore, model_shape

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

KEY = "rag_chunk_kv"
log = init_logger(__name__)


def transfer_params(store: str | Path, chunk_ids: list[str]) -> dict[str, Any]:
    """What a request carries so that the connector loads these chunks' caches."""
    return {KEY: {"store": str(store), "chunks": list(chunk_ids)}}


@dataclass
class Load:
    """One request's tokens [start, end) to write from its store into these cache slots."""

    store: str
    chunks: list[str]
    start: int
    end: int
    slots: list[int]


@dataclass
class ChunkKVMetadata(KVConnectorMetadata):
    loads: list[Load] = field(default_factory=list)


class ChunkKVConnector(KVConnectorBase_V1):
    """Loads chunk caches from a `ChunkKVStore` into vLLM's paged KV blocks; stores nothing."""

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole,
                 kv_cache_config: KVCacheConfig | None = None) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        model = vllm_config.model_config
        self.shape = model_shape(model.hf_config, model.model)
        self.block_size = vllm_config.cache_config.block_size
        self.stores: dict[str, ChunkKVStore] = {}
        self.asked: dict[str, tuple[Request, int]] = {}  # request id -> (request, local tokens)
        self.pending: dict[str, tuple[Request, int, int]] = {}  # + external tokens

    def _store(self, path: str) -> ChunkKVStore:
        if path not in self.stores:  # the model's shape checked once; each prompt by `covered`
            self.stores[path] = ChunkKVStore(path, self.shape)
        return self.stores[path]

    # -- scheduler half --------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int
                                   ) -> tuple[int | None, bool]:
        spec = (request.kv_transfer_params or {}).get(KEY)
        if spec is None:
            return 0, False
        prompt = list(request.prompt_token_ids or [])
        try:
            covered = self._store(spec["store"]).covered(prompt, spec["chunks"])
        except RagError as exc:  # the engine serves others too: prefill this one in full
            log.error("request %s: chunk caches not used: %s", request.request_id, exc)
            return 0, False
        covered = min(covered, len(prompt) - 1)  # vLLM computes at least the last token
        if covered <= num_computed_tokens:
            return 0, False
        self.asked[request.request_id] = (request, num_computed_tokens)
        return covered - num_computed_tokens, False

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks,
                                 num_external_tokens: int) -> None:
        asked = self.asked.pop(request.request_id, None)
        if asked is not None and num_external_tokens > 0:
            self.pending[request.request_id] = (request, asked[1], num_external_tokens)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = ChunkKVMetadata()
        cached = scheduler_output.scheduled_cached_reqs  # a preempted request gets new blocks
        scheduled = [(new.req_id, new.block_ids) for new in scheduler_output.scheduled_new_reqs]
        scheduled += [(req_id, blocks) for req_id, blocks in zip(cached.req_ids, cached.new_block_ids)
                      if req_id in cached.resumed_req_ids]
        for req_id, block_ids in scheduled:
            if req_id not in self.pending or block_ids is None:
                continue
            request, start, count = self.pending.pop(req_id)
            spec, blocks, bs = request.kv_transfer_params[KEY], block_ids[0], self.block_size
            meta.loads.append(Load(
                store=spec["store"], chunks=spec["chunks"], start=start, end=start + count,
                slots=[blocks[t // bs] * bs + t % bs for t in range(start, start + count)]))
        return meta

    def request_finished(self, request: Request, block_ids: list[int]
                         ) -> tuple[bool, dict[str, Any] | None]:
        self.asked.pop(request.request_id, None)
        self.pending.pop(request.request_id, None)
        return False, None

    # -- worker half -----------------------------------------------------------------------

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, ChunkKVMetadata)
        if not meta.loads:
            return
        layers = [(extract_layer_index(name), layer)
                  for name, layer in forward_context.no_compile_layers.items()
                  if getattr(layer, "kv_cache", None) is not None and hasattr(layer, "impl")]
        dtype, device = layers[0][1].kv_cache.dtype, layers[0][1].kv_cache.device
        for load in meta.loads:
            store = self._store(load.store)
            keys, values = store.assemble(load.chunks, store.inv_freq(), dtype, start=load.start)
            slots = torch.tensor(load.slots, dtype=torch.int64, device=device)
            # (layers, tokens, kv_heads, head_dim), as the backend writes them: one copy for all
            count = load.end - load.start
            keys = keys[:, 0, :, :count].transpose(1, 2).contiguous().to(device)
            values = values[:, 0, :, :count].transpose(1, 2).contiguous().to(device)
            for index, layer in layers:
                layer.impl.do_kv_cache_update(layer, keys[index], values[index], layer.kv_cache,
                                              slots)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # start_load_kv writes every layer before the forward pass

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any,
                      **kwargs: Any) -> None:
        return  # stores are built at index time, never from the engine

    def wait_for_save(self) -> None:
        return
