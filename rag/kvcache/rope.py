"""Moving cached keys to new positions: RoPE is a rotation, so a shift is one more rotation.

A key cached at position p holds R(p)·k. Placed at p + Δ it must hold R(p + Δ)·k = R(Δ)·R(p)·k,
so re-rotating by Δ is exact, whatever p was. All tokens of a layer move in a few tensor
operations; layers go one at a time, so that float32 temporaries stay in cache (a Python loop
per token or chunk would cost most of the gain; DESIGN.md §8).
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


def rerotate(keys: Any, delta: Any, frequencies: Any, out: Any = None) -> Any:
    """Keys (..., tokens, head_dim) moved by `delta` positions (one shift per token), written into
    `out` (of any dtype; a new float32 tensor by default). Computed in float32 whatever the keys'
    dtype: a rotation in bfloat16 is off by up to 4% of a key. One leading slice (a layer) at a
    time, so that the float32 temporaries stay in cache even for a prompt of thousands of tokens."""
    import torch

    angles = delta.to(torch.float32)[:, None] * frequencies.float()[None, :]  # (tokens, head_dim/2)
    cos, sin = angles.cos(), angles.sin()
    out = torch.empty(keys.shape, dtype=torch.float32) if out is None else out
    half = keys.shape[-1] // 2
    for block, target in zip(keys, out) if keys.dim() > 2 else [(keys, out)]:
        x = block.float()
        x1, x2 = x[..., :half], x[..., half:]
        target[..., :half] = torch.mul(x1, cos).addcmul_(x2, sin, value=-1)
        target[..., half:] = torch.mul(x2, cos).addcmul_(x1, sin)
    return out
