"""Prefill over a cache assembled from precomputed chunks, recomputing a chosen part of it.

The decoder layers are run by hand (Llama/Qwen2/Mistral shapes) so that each layer can compute
only some tokens while attending to all: the new tokens (question and answer prompt) always, and
with CacheBlend (Yao et al. 2024) the fraction r of chunk tokens whose values deviate most from
the reused cache at the check layer. Layers up to the check layer recompute every chunk token
(that is how deviations are measured); only selected tokens' keys and values replace the reused
ones, in every layer. So r = 0 is pure reuse (chunks never see each other, TurboRAG/Block-
Attention style) and r = 1 is exactly a full prefill.
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


def _attend(layer: Any, hidden: Any, positions: Any, keys: Any, values: Any,
            key_positions: Any, cos: Any, sin: Any, write: Any) -> tuple[Any, Any, Any]:
    """One decoder layer for the tokens in `hidden`, attending causally to `keys`/`values`.

    `write` holds, for each computed token, its index in the key axis: fresh keys and values
    replace the cached ones there, in place (the caller restores those it does not keep).
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
) -> Prefilled:
    """Prefill the tokens of `ids` after the cached ones, recomputing `fraction` of the chunks.

    `keys`/`values` (layers, 1, kv_heads, cached, head_dim) hold the assembled cache of the
    first `cached` ids: the system prefix exactly, chunks re-rotated. `chunk_mask` (cached,)
    marks the chunk tokens, the only ones that may be recomputed. `always` (cached,) marks chunk
    tokens recomputed in every layer whatever the selection: EPIC's LegoLink (the first tokens of
    each chunk), or a whole chunk (the last one, next to the question); CacheBlend's fraction is
    taken from the other chunk tokens.
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
    pad = (*keys.shape[1:3], total - cached, keys.shape[4])
    final_k, final_v, fresh = [], [], []
    with torch.inference_mode():
        hidden = model.model.embed_tokens(torch.tensor([ids])[:, compute])
        for index, layer in enumerate(layers):
            layer_k = torch.cat([keys[index], keys.new_zeros(pad)], dim=2)
            layer_v = torch.cat([values[index], values.new_zeros(pad)], dim=2)
            cos, sin = model.model.rotary_emb(hidden, compute[None])
            hidden, _, v = _attend(layer, hidden, compute, layer_k, layer_v, positions,
                                   cos.unsqueeze(1), sin.unsqueeze(1), compute)
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
    return Prefilled(keys=final_k, values=final_v, logits=logits, recomputed=recomputed)
