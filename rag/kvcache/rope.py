"""Moving cached keys to new positions: RoPE is a rotation, so a shift is one more rotation.

A key cached at position p holds R(p)·k. Placed at p + Δ it must hold R(p + Δ)·k = R(Δ)·R(p)·k,
so re-rotating by Δ is exact, whatever p was. Rotations of all layers and all tokens are applied
in one fused operation (a per-layer Python loop costs most of the gain; DESIGN.md §8).
"""

from __future__ import annotations

from typing import Any

from rag.errors import RagError

SUPPORTED = ("llama", "qwen2", "mistral")  # decoder layers of the same shape, default RoPE


def inv_freq(model: Any) -> Any:
    """The model's RoPE frequencies; refuses models whose rotation is not plain RoPE."""
    config = model.config
    if config.model_type not in SUPPORTED:
        raise RagError(f"KV reuse supports {', '.join(SUPPORTED)} models, not {config.model_type!r}")
    rotary = model.model.rotary_emb
    if getattr(rotary, "rope_type", "default") != "default" or getattr(
            rotary, "attention_scaling", 1.0) != 1.0:
        raise RagError(f"KV reuse needs default RoPE, not {rotary.rope_type!r} scaling")
    return rotary.inv_freq


def rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rerotate(keys: Any, delta: Any, frequencies: Any) -> Any:
    """Keys (..., tokens, head_dim) moved by `delta` positions (one shift per token), in float32
    whatever the keys' dtype: a rotation computed in bfloat16 is off by up to 4% of a key, and on
    CPUs bfloat16 arithmetic outside matmuls is slower than float32. Each half of head_dim is
    written once (x1·cos - x2·sin, x2·cos + x1·sin), with no concatenated `rotate_half` copy."""
    import torch

    angles = delta.to(torch.float32)[:, None] * frequencies.float()[None, :]  # (tokens, head_dim/2)
    cos, sin = angles.cos(), angles.sin()
    x = keys.float()
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.empty_like(x)
    first, second = out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=first).addcmul_(x2, sin, value=-1)
    torch.mul(x2, cos, out=second).addcmul_(x1, sin)
    return out
