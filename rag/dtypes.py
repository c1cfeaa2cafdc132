"""Which floating-point type a model runs in when its config says `dtype: auto`.

bfloat16 halves memory traffic, and where the hardware multiplies it in tiles it is several times
faster than float32: on CPUs with AMX (`amx_bf16`; a 2048 matmul ran 7.4x faster, vLLM 2.2-2.7x)
and on GPUs that support it. Elsewhere float32 stays the choice: on AVX2-only CPUs vLLM in
bfloat16 measured 5x slower, and on an AVX512-BF16 CPU without AMX torch's bfloat16 matmul ran at
half the float32 rate (`benchmarks/results/limits.json`). Every backend resolves `auto` here, so
one rule decides for all.
`RAG_AUTO_DTYPE` pins what `auto` means (e.g. `float32` where greedy answers must repeat bit for
bit: in bfloat16 a prompt served from the prefix cache can decode differently from a fresh one).
"""

from __future__ import annotations

import os
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal

Dtype = Literal["float32", "bfloat16", "float16"]
DtypeChoice = Literal["auto", "float32", "bfloat16", "float16"]
DTYPE_HELP = ("auto: bfloat16 where the CPU (AMX) or GPU computes it natively, "
              "float32 elsewhere (rag.dtypes)")
BF16_CPU_FLAGS = frozenset({"amx_bf16"})


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
def cpu_has_bf16() -> bool:
    return bool(BF16_CPU_FLAGS & cpu_flags())


def auto_dtype(device: str) -> Dtype:
    """bfloat16 on a device that computes it natively, float32 elsewhere (or `RAG_AUTO_DTYPE`)."""
    pinned = os.environ.get("RAG_AUTO_DTYPE")
    if pinned:
        if pinned not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"RAG_AUTO_DTYPE must be float32, bfloat16 or float16, not {pinned!r}")
        return pinned  # type: ignore[return-value]
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_bf16() else "float32"


def resolve_device(device: str) -> str:
    """`auto` is the first GPU where torch sees one, the CPU elsewhere."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> Dtype:
    return auto_dtype(device) if dtype == "auto" else dtype  # type: ignore[return-value]


class InProcessModel:
    """For components whose model runs in this process: `config.device` and `config.dtype`
    resolved once, by the same rule for generators and encoders."""

    config: Any

    @cached_property
    def device(self) -> str:
        return resolve_device(self.config.device)

    @property
    def dtype(self) -> Dtype:
        return resolve_dtype(self.config.dtype, self.device)

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)
