"""Which floating-point type a model runs in when its config says `dtype: auto`.

bfloat16 halves memory traffic, and where the hardware multiplies it natively it is faster than
float32: on CPUs with AMX (`amx_bf16`; a 2048 matmul ran 7.4x faster, vLLM 2.2-2.7x) and on GPUs
that support it. On AVX2-only CPUs vLLM in bfloat16 measured 5x slower, so float32 stays there.
CPUs with AVX512-BF16 but no AMX differ by role (`benchmarks/results/limits.json`):
- generators decode a few rows per step, where halving the weight bytes pays: `bench` through
  vLLM decoded 1.6x faster in bfloat16 than in float32 on an AMD EPYC (Zen 4), and both vLLM and
  transformers were faster in it on an earlier host whose torch bfloat16 matmul ran at half the
  float32 rate;
- encoders multiply large batches, which on that earlier host encoded 20% slower in bfloat16,
  so they use bfloat16 only with AMX (which also keeps saved indexes' vectors in one dtype).
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
Role = Literal["generator", "encoder"]
DTYPE_HELP = ("auto: bfloat16 where the CPU (AMX; AVX512-BF16 for generators) or GPU computes "
              "it natively, float32 elsewhere (rag.dtypes)")
BF16_CPU_FLAGS: dict[Role, frozenset[str]] = {
    "generator": frozenset({"amx_bf16", "avx512_bf16"}),
    "encoder": frozenset({"amx_bf16"}),
}


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
def cpu_has_bf16(role: Role) -> bool:
    return bool(BF16_CPU_FLAGS[role] & cpu_flags())


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
