from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import ModelNotFoundError
from rag.models import NAMED_MODELS, convert_gguf, file_sha256, resolve_model


def test_named_defaults_resolve_to_loadable_folders():
    tiny = resolve_model("tiny")
    assert (tiny / "config.json").is_file() and (tiny / "tokenizer.json").is_file()
    encoder = resolve_model("encoder")
    assert (encoder / "modules.json").is_file()


def test_local_folder_resolves_to_itself():
    folder = resolve_model("encoder")
    assert resolve_model(str(folder)) == folder


def test_gguf_file_converts_once_into_a_cache_keyed_by_its_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    gguf = NAMED_MODELS["tiny"].source()
    folder = resolve_model(str(gguf))
    assert folder.parent == tmp_path / "models"
    assert folder.name.endswith(file_sha256(gguf)[:16])
    assert (folder / "model.safetensors").is_file()
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert convert_gguf(gguf) == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # not converted again
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.parametrize("reference", ["no-such-model", "org/not-in-cache", "", "./missing"])
def test_unknown_reference_lists_the_named_defaults(reference):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(reference)
    for name in NAMED_MODELS:
        assert name in str(err.value)


def test_file_that_is_not_gguf_is_refused(tmp_path: Path):
    bogus = tmp_path / "weights.bin"
    bogus.write_bytes(b"\0" * 16)
    with pytest.raises(ModelNotFoundError, match=r"\.gguf"):
        resolve_model(str(bogus))


def test_folder_without_a_config_is_refused(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model(str(tmp_path))


def test_missing_package_names_the_install_step(monkeypatch):
    from rag import models

    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="make models"):
        resolve_model("tiny")
