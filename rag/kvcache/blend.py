"""Prefill over a cache assembled from precomputed chunks, recomputing a chosen part of it.

The decoder layers are run by hand (Llama/Qwen2/Mistral shapes) so that each layer can compute
only some tokens while attending to all: the new tokens (question and answer prompt) always, and
with CacheBlend (Yao et al. 2024) the fraction r of chunk tokens whose values deviate most from
the reused cache at the check layer. Layers up to the check layer recompute every chunk token
(that is how deviations are measured); only selected tokens' keys and values replace the reused
ones, in every layer. So r = 0 is pure reuse (chunks never see each other, TurboRAG/Block-
Attention style) and r = 1 is exactly a full prefill.

APE (Yang et al. 2025) repairs reuse without recomputing: the new tokens' attention to the
parallel-encoded chunks is sharpened or flattened by a temperature T and weighted by a scale S
(the chunks' log-sum-exp becomes T·LSE(logits / T) + log S beside the other keys'), so that
their attention distribution moves back toward that of a sequential prefill. It applies to every
token after the cache, generated ones included (`ape_decode_step`). T = S = 1 is plain reuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag.errors import RagError


@dataclass
class Prefilled:
    """Per-layer keys and values of the whole prompt, and the logits after its last token."""

    keys: list[Any]  # per layer (1, kv_heads, tokens, head_dim)
    values: list[Any]
    logits: Any  # (vocab,)
    recomputed: int  # chunk tokens recomputed (beyond the new tokens)
    chunk_mask: Any = None  # (tokens,) the cached chunk tokens, kept for APE's decoding
    ape: tuple[float, float] | None = None  # (temperature, scale)


def _ape_attention(q: Any, keys: Any, values: Any, mask: Any, scale: float, doc: Any,
                   ape: tuple[float, float]) -> Any:
    """Attention of `q` (1, heads, n, d) where the keys marked `doc` get APE's temperature and
    scale: their logits l/T plus (T - 1)·LSE(l/T) + log S, one softmax over all keys (the same
    as APE's per-group softmaxes merged by their log-sum-exps)."""
    import math

    import torch

    temperature, weight = ape
    groups = q.shape[1] // keys.shape[1]
    k, v = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
    logits = (q @ k.transpose(-1, -2)) * scale
    logits = logits.masked_fill(~mask, float("-inf"))
    scaled = torch.where(doc, logits / temperature, logits)
    lse = torch.logsumexp(scaled.masked_fill(~doc, float("-inf")), -1, keepdim=True)
    bias = torch.where(torch.isfinite(lse), (temperature - 1) * lse + math.log(weight), 0.0)
    return torch.softmax(torch.where(doc, scaled + bias, logits), -1) @ v


def _attend(layer: Any, hidden: Any, positions: Any, keys: Any, values: Any,
            key_positions: Any, cos: Any, sin: Any, write: Any,
            ape: tuple[Any, Any, tuple[float, float]] | None = None) -> tuple[Any, Any, Any]:
    """One decoder layer for the tokens in `hidden`, attending causally to `keys`/`values`.

    `write` holds, for each computed token, its index in the key axis: fresh keys and values
    replace the cached ones there, in place (the caller restores those it does not keep).
    `ape`: (rows, doc keys, (T, S)): those rows attend with APE's temperature and scale.
    """
    import torch
    import torch.nn.functional as F

    from rag.kvcache.rope import rotate_half

    attn = layer.self_attn
    normed = layer.input_layernorm(hidden)
    shape = (*normed.shape[:-1], -1, attn.head_dim)
    q = attn.q_proj(normed).view(shape).transpose(1, 2)
    k = attn.k_proj(normed).view(shape).transpose(1, 2)
    v = attn.v_proj(normed).view(shape).transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    keys[:, :, write], values[:, :, write] = k, v
    mask = key_positions[None, :] <= positions[:, None]  # causal, by true positions
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling,
                                         enable_gqa=True)
    if ape is not None and ape[0].any():
        rows, doc, settings = ape
        out[:, :, rows] = _ape_attention(q[:, :, rows], keys, values, mask[rows], attn.scaling,
                                         doc, settings)
    out = attn.o_proj(out.transpose(1, 2).reshape(*normed.shape[:-1], -1))
    hidden = hidden + out
    hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return hidden, k, v


def blended_prefill(
    model: Any,
    ids: list[int],
    keys: Any,
    values: Any,
    chunk_mask: Any,
    fraction: float,
    check_layer: int = 1,
    always: Any = None,
    ape: tuple[float, float] | None = None,
) -> Prefilled:
    """Prefill the tokens of `ids` after the cached ones, recomputing `fraction` of the chunks.

    `keys`/`values` (layers, 1, kv_heads, cached, head_dim) hold the assembled cache of the
    first `cached` ids: the system prefix exactly, chunks re-rotated. `chunk_mask` (cached,)
    marks the chunk tokens, the only ones that may be recomputed. `always` (cached,) marks chunk
    tokens recomputed in every layer whatever the selection: EPIC's LegoLink (the first tokens of
    each chunk), or a whole chunk (the last one, next to the question); CacheBlend's fraction is
    taken from the other chunk tokens. `ape` = (T, S): APE for the tokens after the cache.
    """
    import torch

    if not 0.0 <= fraction <= 1.0:
        raise RagError(f"recompute fraction must be in [0, 1], got {fraction}")
    layers = model.model.layers
    cached, total = keys.shape[3], len(ids)
    if cached >= total:
        raise RagError("nothing to prefill after the cached tokens")
    check_layer = min(check_layer, len(layers) - 1)
    positions = torch.arange(total)
    always = torch.zeros(cached, dtype=torch.bool) if always is None else always & chunk_mask
    chunk_positions = positions[:cached][chunk_mask & ~always]  # CacheBlend's candidates
    fixed = torch.cat([positions[:cached][always], positions[cached:]])
    compute = torch.cat([chunk_positions, fixed]) if fraction > 0 else fixed
    doc = torch.cat([chunk_mask, torch.zeros(total - cached, dtype=torch.bool)])
    pad = (*keys.shape[1:3], total - cached, keys.shape[4])
    final_k, final_v, fresh = [], [], []
    with torch.inference_mode():
        hidden = model.model.embed_tokens(torch.tensor([ids])[:, compute])
        for index, layer in enumerate(layers):
            layer_k = torch.cat([keys[index], keys.new_zeros(pad)], dim=2)
            layer_v = torch.cat([values[index], values.new_zeros(pad)], dim=2)
            cos, sin = model.model.rotary_emb(hidden, compute[None])
            hidden, _, v = _attend(layer, hidden, compute, layer_k, layer_v, positions,
                                   cos.unsqueeze(1), sin.unsqueeze(1), compute,
                                   (compute >= cached, doc, ape) if ape else None)
            fresh.append(compute)
            final_k.append(layer_k)
            final_v.append(layer_v)
            if index == check_layer and 0.0 < fraction < 1.0 and len(chunk_positions):
                n = len(chunk_positions)
                deviation = (v[:, :, :n] - values[index][:, :, chunk_positions]).norm(dim=(1, 3))[0]
                top = deviation.topk(max(1, round(fraction * n))).indices.sort().values
                keep = torch.cat([top, torch.arange(n, len(compute))])
                compute, hidden = compute[keep], hidden[:, keep]
        for index, (written, layer_k, layer_v) in enumerate(zip(fresh, final_k, final_v)):
            # Keep fresh keys and values only where the final selection recomputed them.
            dropped = written[~torch.isin(written, compute)]
            layer_k[:, :, dropped] = keys[index][:, :, dropped]
            layer_v[:, :, dropped] = values[index][:, :, dropped]
        logits = model.lm_head(model.model.norm(hidden[:, -1]))[0]
    recomputed = len(compute) - (total - cached)
    return Prefilled(keys=final_k, values=final_v, logits=logits, recomputed=recomputed,
                     chunk_mask=chunk_mask, ape=ape)


def ape_decode_step(model: Any, ids: list[int], prefilled: Prefilled) -> Prefilled:
    """One generated token (the last of `ids`) over `prefilled`, with APE's attention still on."""
    import torch

    keys, values = torch.stack(prefilled.keys), torch.stack(prefilled.values)
    mask = torch.cat([prefilled.chunk_mask,
                      torch.zeros(keys.shape[3] - len(prefilled.chunk_mask), dtype=torch.bool)])
    step = blended_prefill(model, ids, keys, values, mask, 0.0, ape=prefilled.ape)
    step.chunk_mask = prefilled.chunk_mask
    return step
