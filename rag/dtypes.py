"""Which floating-point type a model runs in when its config says `dtype: auto`.

bfloat16 halves memory traffic, and where the hardware multiplies it natively it is faster than
float32: on CPUs with AMX (`amx_bf16`; a 2048 matmul ran 7.4x faster, vLLM 2.2-2.7x) and on GPUs
that support it. On AVX2-only CPUs vLLM in bfloat16 measured 5x slower, so float32 stays there.
CPUs with AVX512-BF16 but no AMX differ by host and by role (`benchmarks/results/limits.json`):
- generators decode a few rows per step, where halving the weight bytes pays: `bench` through
  vLLM decoded 1.6x faster in bfloat16 than in float32 on an AMD EPYC (Zen 4), and both vLLM and
  transformers were faster in it on an earlier host whose torch bfloat16 matmul ran at half the
  float32 rate;
- encoders multiply large batches, whose speed follows the matmul: on that earlier host MiniLM
  encoded 20% slower in bfloat16, on the Zen 4 an encoder-shaped matmul ran 2.7x faster. So
  there an encoder's `auto` times one such matmul in both types, once per process, and takes
  bfloat16 only where it runs at least `ENCODER_BF16_MIN_SPEEDUP` times faster.
`RAG_AUTO_DTYPE` pins what `auto` means (e.g. `float32` where greedy answers must repeat bit for
bit: in bfloat16 a prompt served from the prefix cache can decode differently from a fresh one).
"""

from __future__ import annotations

import os
import time
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal

Dtype = Literal["float32", "bfloat16", "float16"]
DtypeChoice = Literal["auto", "float32", "bfloat16", "float16"]
Role = Literal["generator", "encoder"]
DTYPE_HELP = ("auto: bfloat16 where the CPU (AMX; AVX512-BF16 for generators, and for encoders "
              "where its matmul measures faster) or GPU computes it natively, float32 elsewhere "
              "(rag.dtypes)")
ENCODER_BF16_MIN_SPEEDUP = 1.5  # a clear margin, so a noisy timing cannot flip the choice
ENCODER_MATMUL = (2048, 384, 1536)  # rows x MiniLM's hidden size @ its feed-forward width


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags the CPU reports (empty where /proc/cpuinfo is not readable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@cache
def host_flags() -> frozenset[str]:
    """This machine's flags, read once: every model's `dtype` asks."""
    return cpu_flags()


@cache
def encoder_bf16_speedup() -> float:
    """float32 seconds over bfloat16 seconds for an encoder-shaped matmul on this CPU (the
    fastest of 5 runs each, after a warm-up)."""
    import torch

    rows, inner, cols = ENCODER_MATMUL
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
        a @ b
        runs = []
        for _ in range(5):
            began = time.perf_counter()
            a @ b
            runs.append(time.perf_counter() - began)
        best[dtype] = min(runs)
    return best[torch.float32] / best[torch.bfloat16]


def cpu_has_bf16(role: Role) -> bool:
    """Whether this CPU computes bfloat16 natively and it pays for `role` (module docstring)."""
    flags = host_flags()
    if "amx_bf16" in flags:
        return True
    if "avx512_bf16" not in flags:
        return False
    return role == "generator" or encoder_bf16_speedup() >= ENCODER_BF16_MIN_SPEEDUP


def auto_dtype(device: str, role: Role) -> Dtype:
    """bfloat16 where the device computes it natively for this role, float32 elsewhere (or
    `RAG_AUTO_DTYPE`)."""
    pinned = os.environ.get("RAG_AUTO_DTYPE")
    if pinned:
        if pinned not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"RAG_AUTO_DTYPE must be float32, bfloat16 or float16, not {pinned!r}")
        return pinned  # type: ignore[return-value]
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_bf16(role) else "float32"


def resolve_device(device: str) -> str:
    """`auto` is the first GPU where torch sees one, the CPU elsewhere."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str, role: Role) -> Dtype:
    return auto_dtype(device, role) if dtype == "auto" else dtype  # type: ignore[return-value]


class InProcessModel:
    """For components whose model runs in this process: `config.device` and `config.dtype`
    resolved once, by the rule of the component's role."""

    config: Any
    dtype_role: Role  # which rule `auto` follows

    @cached_property
    def device(self) -> str:
        return resolve_device(self.config.device)

    @property
    def dtype(self) -> Dtype:
        return resolve_dtype(self.config.dtype, self.device, self.dtype_role)

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)
