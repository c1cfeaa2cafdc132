"""A store of per-chunk keys and values, computed once at index time.

Each chunk runs through the model alone, right after the fixed system prefix it will follow in
every prompt (so that a single retrieved chunk is exactly what a full prefill computes), or
situated: after the prefix and a context of its own (a demonstration's nearest neighbours in the
pool), whose caches are not kept. Its per-layer keys and values are saved: safetensors shards of
up to `shard_size` chunks, opened memory-mapped on load, with a JSON manifest naming the model,
its shape, the dtype and the prefix, and the model's RoPE frequencies (so that a reader without
the model, vLLM's KV connector, can move keys to new positions). A store built by another model,
with another layer count or dtype, or for another prefix is refused with an error naming the file
and the mismatch, never silently misused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from rag.errors import IndexLoadError, RagError
from rag.storage import atomic_path, atomic_write_json, checked_load, load_json

FORMAT = "rag-icl/chunk-kv-v1"
MANIFEST = "manifest.json"
PREFIX = "prefix.safetensors"
StoreDtype = Literal["float32", "bfloat16", "float16"]


def model_shape(config: Any, name: str) -> dict[str, Any]:
    """What a cache must match: the model's identity and the shape of its keys and values
    (`config` is the model's transformers config, which vLLM holds too)."""
    return {"model": name, "model_type": config.model_type, "layers": config.num_hidden_layers,
            "kv_heads": config.num_key_value_heads,
            "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads}


def prefix_digest(prefix_ids: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps(list(prefix_ids)).encode()).hexdigest()[:16]


def stacked_kv(cache: Any, start: int, end: int | None = None, row: int = 0) -> tuple[Any, Any]:
    """Stacked (layers, 1, kv_heads, tokens, head_dim) keys and values of one batch row."""
    import torch

    layers = cache.layers
    keys = torch.stack([layer.keys[row : row + 1, :, start:end] for layer in layers])
    values = torch.stack([layer.values[row : row + 1, :, start:end] for layer in layers])
    return keys, values


class ChunkKVStore:
    """Open a built store, refusing one that does not match `shape` and, when given, `dtype`
    and `prefix_ids` (`covered` checks a prompt's prefix instead); `get` returns chunks' keys and
    values, `assemble` a whole prompt's."""

    def __init__(self, path: str | Path, shape: dict[str, Any], dtype: StoreDtype | None = None,
                 prefix_ids: Sequence[int] | None = None) -> None:
        self.path = Path(path)
        manifest = load_json(self.path / MANIFEST, "chunk KV manifest")
        where = self.path / MANIFEST
        if manifest.get("format") != FORMAT:
            raise IndexLoadError(f"{where}: not a chunk KV store ({manifest.get('format')!r})")
        for key, want in shape.items():
            if manifest["shape"].get(key) != want:
                raise IndexLoadError(f"{where}: built for {key}={manifest['shape'].get(key)!r}, "
                                     f"this model has {want!r}; rebuild the store")
        if dtype is not None and manifest["dtype"] != dtype:
            raise IndexLoadError(f"{where}: stored as {manifest['dtype']}, asked for {dtype}")
        if prefix_ids is not None and manifest["prefix"] != prefix_digest(prefix_ids):
            raise IndexLoadError(f"{where}: built after another system prefix; rebuild the store")
        self.manifest = manifest
        self.chunks: dict[str, dict[str, Any]] = manifest["chunks"]
        self._shards: dict[str, Any] = {}

    def _open(self, name: str) -> Any:
        from safetensors import safe_open

        if name not in self._shards:
            path = self.path / name
            handle = checked_load(path, "chunk KV shard", lambda p: safe_open(str(p), framework="pt"))
            if handle.metadata().get("format") != FORMAT or json.loads(
                    handle.metadata().get("shape", "{}")) != self.manifest["shape"]:
                raise IndexLoadError(f"{path}: shard of another store or model")
            self._shards[name] = handle
        return self._shards[name]

    def covered(self, prompt_ids: Sequence[int], chunk_ids: Sequence[str]) -> int:
        """How many of the prompt's first tokens these caches hold: the store's prefix, then the
        chunks in order. A prompt that does not start that way is refused."""
        at = self.manifest["prefix_tokens"]
        if prefix_digest(prompt_ids[:at]) != self.manifest["prefix"]:
            raise IndexLoadError(f"{self.path}: the prompt does not start with this store's "
                                 "system prefix (built after another one?)")
        for chunk_id in chunk_ids:
            entry = self._entry(chunk_id)
            if list(prompt_ids[at : at + len(entry["ids"])]) != entry["ids"]:
                raise IndexLoadError(f"{self.path}: chunk {chunk_id!r} is not the prompt's text at "
                                     f"token {at} (stored from another text or tokenizer?)")
            at += len(entry["ids"])
        return at

    def prefix_kv(self) -> tuple[Any, Any]:
        handle = self._open(PREFIX)
        return handle.get_tensor("k"), handle.get_tensor("v")

    def inv_freq(self) -> Any:
        """The RoPE frequencies of the model that built the store."""
        handle = self._open(PREFIX)
        if "inv_freq" not in handle.keys():
            raise IndexLoadError(f"{self.path}: built without RoPE frequencies (an older store); "
                                 "rebuild it")
        return handle.get_tensor("inv_freq")

    def assemble(self, chunk_ids: Sequence[str], frequencies: Any, dtype: Any, start: int = 0
                 ) -> tuple[Any, Any]:
        """Keys and values (layers, 1, kv_heads, tokens, head_dim) of the prefix followed by
        these chunks, from the prompt's token `start` on (an engine's prefix cache may hold the
        tokens before it; a chunk wholly before it is not read). Each chunk's keys are re-rotated
        from where it was encoded (after the prefix and its own context, if it had one) to where
        it sits now: all chunks at once, in float32, rounded to `dtype` once."""
        import torch

        from rag.kvcache.rope import rerotate

        prefix_k, prefix_v = self.prefix_kv()
        encoded_at = at = prefix_k.shape[3]
        keep = prefix_k[..., start:, :].shape[3]  # prefix tokens, as stored
        stored_k, stored_v, deltas = [prefix_k[..., start:, :]], [prefix_v[..., start:, :]], []
        for chunk_id in chunk_ids:
            entry = self._entry(chunk_id)
            length, skip = len(entry["ids"]), max(0, start - at)
            if skip < length:
                k, v, _ = self.get(chunk_id)
                stored_k.append(k[..., skip:, :])
                stored_v.append(v[..., skip:, :])
                shift = at - encoded_at - entry.get("context_tokens", 0)
                deltas.append(torch.full((length - skip,), shift))
            at += length
        stored = torch.cat(stored_k, dim=3)
        values = torch.cat(stored_v, dim=3).to(dtype)
        keys = torch.empty(stored.shape, dtype=dtype)
        keys[..., :keep, :] = stored[..., :keep, :]
        if deltas:  # rotated in float32, cast once
            rerotate(stored[..., keep:, :], torch.cat(deltas), frequencies, out=keys[..., keep:, :])
        return keys, values

    def _entry(self, chunk_id: str) -> dict[str, Any]:
        entry = self.chunks.get(chunk_id)
        if entry is None:
            raise RagError(f"chunk {chunk_id!r} is not in the KV store {self.path}")
        return entry

    def get(self, chunk_id: str) -> tuple[Any, Any, list[int]]:
        """Keys, values (layers, 1, kv_heads, tokens, head_dim) and token ids of one chunk."""
        entry = self._entry(chunk_id)
        handle = self._open(entry["shard"])
        n = entry["index"]
        return handle.get_tensor(f"{n}.k"), handle.get_tensor(f"{n}.v"), entry["ids"]

    @property
    def nbytes(self) -> int:
        return int(self.manifest["bytes"])


def build_store(
    model: Any,
    frequencies: Any,
    shape: dict[str, Any],
    prefix_ids: list[int],
    chunks: Sequence[tuple[str, list[int]]],
    path: str | Path,
    dtype: StoreDtype = "float16",
    shard_size: int = 256,
    batch_size: int = 8,
    progress: bool = True,
    compression: dict[str, Any] | None = None,
    contexts: Mapping[str, list[int]] | None = None,
    situated: dict[str, Any] | None = None,
) -> ChunkKVStore:
    """Run every chunk after the prefix, alone or after its own `contexts` tokens (which are not
    stored), and save its keys and values. `compression` and `situated` say how the texts were
    compressed and how the contexts were chosen; the manifest records both."""
    import torch
    from safetensors.torch import save_file
    from transformers import DynamicCache

    path = Path(path)
    store_dtype = getattr(torch, dtype)
    meta = {"format": FORMAT, "shape": json.dumps(shape)}
    with torch.inference_mode():
        prefix_cache = model(torch.tensor([prefix_ids]), use_cache=True).past_key_values
        prefix_k, prefix_v = stacked_kv(prefix_cache, 0)
    with atomic_path(path / PREFIX) as tmp:
        save_file({"k": prefix_k.to(store_dtype).contiguous(),
                   "v": prefix_v.to(store_dtype).contiguous(),
                   "inv_freq": frequencies.float().contiguous()}, str(tmp), metadata=meta)
    entries: dict[str, dict[str, Any]] = {}
    total = 0
    p = len(prefix_ids)
    for shard_no, start in enumerate(tqdm(range(0, len(chunks), shard_size), desc="chunk KV shards",
                                          disable=not progress)):
        tensors: dict[str, Any] = {}
        name = f"shard-{shard_no:05d}.safetensors"
        part = chunks[start : start + shard_size]
        for b in range(0, len(part), batch_size):
            batch = part[b : b + batch_size]
            before = [list(contexts.get(chunk_id, [])) if contexts else [] for chunk_id, _ in batch]
            width = max(len(c) + len(ids) for c, (_, ids) in zip(before, batch))
            rows = torch.tensor([c + ids + [0] * (width - len(c) - len(ids))
                                 for c, (_, ids) in zip(before, batch)])
            past = DynamicCache(ddp_cache_data=[
                (k[0].expand(len(batch), -1, -1, -1), v[0].expand(len(batch), -1, -1, -1))
                for k, v in zip(prefix_k, prefix_v)])
            with torch.inference_mode():  # right padding: a causal model's real tokens never see it
                cache = model(rows, past_key_values=past, use_cache=True,
                              position_ids=torch.arange(p, p + width)[None].expand(len(batch), -1),
                              ).past_key_values
            for row, (chunk_id, ids) in enumerate(batch):
                n = start + b + row
                at = p + len(before[row])
                k, v = stacked_kv(cache, at, at + len(ids), row)
                tensors[f"{n}.k"] = k.to(store_dtype).contiguous()
                tensors[f"{n}.v"] = v.to(store_dtype).contiguous()
                total += 2 * k.numel() * store_dtype.itemsize
                entries[chunk_id] = {"shard": name, "index": n, "ids": ids,
                                     "context_tokens": len(before[row])}
        with atomic_path(path / name) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    atomic_write_json(path / MANIFEST, {
        "format": FORMAT, "shape": shape, "dtype": dtype, "prefix": prefix_digest(prefix_ids),
        "prefix_tokens": p, "bytes": total, "compression": compression, "situated": situated,
        "chunks": entries,
    })
    return ChunkKVStore(path, shape, dtype, prefix_ids)
