"""`dtype: auto` follows what the CPU computes natively, the same rule for every backend."""

from pathlib import Path

import pytest

from rag import dtypes
from rag.registry import build


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    return path


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    assert {"avx2", "amx_bf16"} <= dtypes.cpu_flags(cpuinfo(tmp_path, "avx2 amx_bf16 amx_tile"))
    assert dtypes.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(("flags", "expected"), [
    ("avx2 fma", "float32"), ("avx512f avx512_bf16", "bfloat16"), ("amx_bf16 amx_tile", "bfloat16"),
])
def test_auto_is_bfloat16_only_where_the_cpu_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str, expected: str,
) -> None:
    monkeypatch.delenv("RAG_AUTO_DTYPE", raising=False)
    path = cpuinfo(tmp_path, flags)
    monkeypatch.setattr(dtypes, "cpu_has_bf16", lambda: bool(dtypes.BF16_CPU_FLAGS & dtypes.cpu_flags(path)))
    assert dtypes.auto_dtype("cpu") == expected
    assert dtypes.resolve_dtype("float32", "cpu") == "float32"  # an explicit choice is kept
    for backend in ("vllm", "transformers"):
        generator = build("generator", {"type": backend, "model": "tiny", "dtype": "auto"})
        if backend == "transformers":
            generator.device = "cpu"  # type: ignore[misc]  # the cached property, without a GPU probe
        assert generator.dtype == expected


def test_the_environment_pins_what_auto_means(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtypes, "cpu_has_bf16", lambda: True)
    monkeypatch.setenv("RAG_AUTO_DTYPE", "float32")
    assert dtypes.auto_dtype("cpu") == "float32"
    monkeypatch.setenv("RAG_AUTO_DTYPE", "int8")
    with pytest.raises(ValueError, match="RAG_AUTO_DTYPE"):
        dtypes.auto_dtype("cpu")
