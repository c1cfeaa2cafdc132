"""`rag init` starters, `rag ask`'s default pipeline: written files run as written, on `tiny`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import STARTERS, app
from rag.eval.datasets import humaneval
from rag.pipeline import Pipeline
from rag.recipes import index_corpus

runner = CliRunner()
QUERIES = {
    "qa": "Who painted the Mona Lisa?",
    "icl": "The Mona Lisa is a half-length portrait painting by Italian artist Leonardo da Vinci.",
    "kv": "Who painted the Mona Lisa?",
}


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory, vital_slice) -> Path:
    out = tmp_path_factory.mktemp("small") / "index"
    index_corpus(vital_slice[:40], out, progress=False)
    return out


@pytest.mark.parametrize("kind", STARTERS)
def test_a_starter_round_trips_through_yaml_and_runs_on_tiny(kind, small_index, tmp_path, vllm_tiny):
    out = tmp_path / f"{kind}.yaml"
    result = runner.invoke(app, ["init", kind, "--out", str(out), "--index", str(small_index),
                                 "--model", "tiny"])  # the suite's model; the default is bench
    assert result.exit_code == 0, result.output
    loaded = Pipeline.load(out)
    assert Pipeline.from_yaml(loaded.to_yaml()).to_dict() == loaded.to_dict() == Pipeline.load(out).to_dict()
    query = QUERIES.get(kind) or humaneval(1)[0].prompt
    answer = loaded.ask(query)
    assert answer.text.strip()
    stages = [t.stage for t in answer.trace]
    if kind == "code":
        assert stages == ["code_prompt", "generate", "extract_programs", "execute", "pick"]
        assert "def has_close_elements" in answer.text  # the answer is a program
    if kind == "qa":
        assert stages == ["condense", "retrieve", "rag_prompt", "generate"]


def test_init_needs_an_index_for_qa_and_names_unknown_kinds(tmp_path):
    result = runner.invoke(app, ["init", "qa", "--out", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2 and "--index" in result.output
    result = runner.invoke(app, ["init", "nope", "--out", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2 and "unknown starter 'nope'" in result.output


def test_ask_runs_the_best_measured_pipeline_on_a_hybrid_index(small_index, vllm_tiny):
    result = runner.invoke(app, ["ask", str(small_index), "Who painted the Mona Lisa?",
                                 "--model", "tiny"])  # the suite's model; the default is bench
    assert result.exit_code == 0, result.output
    assert "A: " in result.output and "cited: " in result.output


def test_the_kv_starter_can_cache_compressed_chunks(small_index, tmp_path):
    out = tmp_path / "kv.yaml"
    result = runner.invoke(app, ["init", "kv", "--out", str(out), "--index", str(small_index),
                                 "--compress", "extractive", "--model", "tiny"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "kv-kv" / "manifest.json").read_text())
    assert manifest["compression"]["compressor"]["type"] == "extractive"
    assert manifest["compression"]["kept_tokens"] < manifest["compression"]["original_tokens"]
    answer = Pipeline.load(out).ask(QUERIES["kv"])
    assert answer.text.strip() and answer.usage.cached_prompt_tokens > 0
