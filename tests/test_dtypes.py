"""`dtype: auto` follows what the CPU computes natively, by role: generators and encoders."""

import json
from pathlib import Path

import numpy as np
import pytest

from rag import dtypes
from rag.errors import EncoderMismatchError
from rag.registry import build
from rag.retrievers import HNSWRetriever
from rag.types import Chunk


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    return path


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    assert {"avx2", "amx_bf16"} <= dtypes.cpu_flags(cpuinfo(tmp_path, "avx2 amx_bf16 amx_tile"))
    assert dtypes.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(("flags", "speedup", "generators", "encoders"), [
    ("avx2 fma", 3.0, "float32", "float32"),
    ("avx512f avx512_bf16 avx512_fp16", 0.5, "bfloat16", "float32"),  # its matmul measured slower
    ("avx512f avx512_bf16 avx512_fp16", 2.7, "bfloat16", "bfloat16"),  # and faster (a Zen 4)
    ("avx512f avx512_bf16 amx_bf16 amx_tile", 0.5, "bfloat16", "bfloat16"),  # AMX: no timing
])
def test_auto_is_bfloat16_only_where_the_cpu_has_it_for_the_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str, speedup: float, generators: str,
    encoders: str,
) -> None:
    monkeypatch.delenv("RAG_AUTO_DTYPE", raising=False)
    host = dtypes.cpu_flags(cpuinfo(tmp_path, flags))
    monkeypatch.setattr(dtypes, "host_flags", lambda: host)
    monkeypatch.setattr(dtypes, "encoder_bf16_speedup", lambda: speedup)
    assert dtypes.auto_dtype("cpu", "generator") == generators
    assert dtypes.auto_dtype("cpu", "encoder") == encoders
    assert dtypes.resolve_dtype("float32", "cpu", "generator") == "float32"  # explicit choice kept
    for backend in ("vllm", "transformers"):
        generator = build("generator", {"type": backend, "model": "tiny", "dtype": "auto"})
        if backend == "transformers":
            generator.device = "cpu"  # type: ignore[misc]  # the cached property, without a GPU probe
        assert generator.dtype == generators
    for encoder in ({"type": "sentence_transformers"}, {"type": "splade", "model": "splade"}):
        assert build("encoder", {**encoder, "device": "cpu"}).dtype == encoders


def test_the_encoder_timing_compares_the_two_types_on_this_cpu() -> None:
    speedup = dtypes.encoder_bf16_speedup()
    assert 0 < speedup < 100 and dtypes.encoder_bf16_speedup() == speedup  # timed once


def test_an_encoder_in_bfloat16_runs_in_it_and_is_told_apart() -> None:
    """Close vectors, different identity: neither the embedding cache nor an index mixes them."""
    texts = ["The Eiffel Tower is in Paris.", "Photosynthesis turns light into sugar."]
    made = {}
    for dtype in ("float32", "bfloat16"):
        encoder = build("encoder", {"type": "sentence_transformers", "device": "cpu", "dtype": dtype,
                                    "cache": False})
        assert str(next(encoder.model.parameters()).dtype) == f"torch.{dtype}"
        made[dtype] = (encoder.fingerprint, encoder.encode_documents(texts))
    (fp32, v32), (bf16, v16) = made["float32"], made["bfloat16"]
    assert fp32 != bf16
    assert v16.dtype == np.float32  # vectors leave the encoder as float32 whatever it ran in
    assert (v32 * v16).sum(axis=1).min() > 0.99  # cosine: the same embedding at lower precision
    assert not np.array_equal(v32, v16)


def test_the_environment_pins_what_auto_means(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtypes, "host_flags", lambda: frozenset({"amx_bf16"}))
    monkeypatch.setenv("RAG_AUTO_DTYPE", "float32")
    assert dtypes.auto_dtype("cpu", "generator") == "float32"
    monkeypatch.setenv("RAG_AUTO_DTYPE", "int8")
    with pytest.raises(ValueError, match="RAG_AUTO_DTYPE"):
        dtypes.auto_dtype("cpu", "encoder")


def test_a_saved_index_queries_in_the_dtype_its_vectors_were_made_in(tmp_path: Path) -> None:
    chunks = [Chunk(id=f"c{i}", doc_id=f"d{i}", text=t, start=0, end=len(t)) for i, t in enumerate(
        ["The Eiffel Tower is in Paris.", "Photosynthesis turns light into sugar.",
         "The Nile flows north into the Mediterranean."])]
    index = HNSWRetriever(encoder={"type": "sentence_transformers", "dtype": "bfloat16"})
    index.add(chunks)
    index.save(tmp_path / "bf16")
    for given in (None, {"type": "sentence_transformers"}, {"type": "sentence_transformers", "dtype": "auto"}):
        loaded = HNSWRetriever.load(tmp_path / "bf16", encoder=given)
        assert loaded.encoder.dtype == "bfloat16"
        assert loaded.search(["Where does the Nile flow?"], k=1)[0][0].chunk.id == "c2"
    with pytest.raises(EncoderMismatchError, match="'dtype': 'float32'"):
        HNSWRetriever.load(tmp_path / "bf16", encoder={"type": "sentence_transformers", "dtype": "float32"})
    # a manifest written before encoders had a dtype: its vectors were float32
    manifest = tmp_path / "bf16" / "manifest.json"
    saved = json.loads(manifest.read_text())
    del saved["encoder"]["dtype"]
    manifest.write_text(json.dumps(saved))
    with pytest.raises(EncoderMismatchError, match="float32"):
        HNSWRetriever.load(tmp_path / "bf16")
