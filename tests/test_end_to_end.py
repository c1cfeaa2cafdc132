from __future__ import annotations

import json

from typer.testing import CliRunner

from rag.cli import app
from rag.pipeline import Pipeline
from rag.recipes import naive_rag

runner = CliRunner()


def test_naive_rag_answers_and_cites_the_gold_article(index_dir, vllm_tiny):
    pipeline = naive_rag(index_dir, vllm_tiny)
    answer = pipeline.ask("Which 1968 film did Stanley Kubrick direct?")
    assert "2001" in answer.text
    assert "2001: A Space Odyssey" in [c.title for c in answer.citations]
    assert len(answer.sources) == 3
    assert [t.stage for t in answer.trace] == ["retrieve", "rag_prompt", "generate"]
    assert answer.usage.prompt_tokens > 100 and answer.usage.completion_tokens > 0


def test_a_pipeline_file_rebuilds_the_same_pipeline_and_engine(index_dir, vllm_tiny, tmp_path):
    pipeline = naive_rag(index_dir, {"type": "vllm", "model": "tiny"}, k=3)
    assert pipeline.stages[-1].generator is vllm_tiny  # same spec: the session's one engine
    pipeline.save(tmp_path / "p.yaml")
    loaded = Pipeline.load(tmp_path / "p.yaml")
    assert loaded.to_dict() == pipeline.to_dict()
    questions = ["Who painted the Mona Lisa?", "Which opera did Bizet write about a gypsy?"]
    assert [a.text for a in loaded.answer(questions)] == [a.text for a in pipeline.answer(questions)]


def test_cli_help_describes_each_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("index", "ask", "models"):
        assert command in result.output
    assert "Chunk a corpus" in runner.invoke(app, ["index", "--help"]).output


def test_cli_index_reports_a_broken_corpus_line_and_writes_nothing(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": 1, "text": "ok"}) + "\n{broken\n")
    result = runner.invoke(app, ["index", str(corpus), "--out", str(tmp_path / "idx")])
    assert result.exit_code == 2
    assert "c.jsonl:2: invalid JSON" in result.output
    assert not (tmp_path / "idx").exists()


def test_cli_index_then_ask_a_missing_index(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "a", "title": "Zorblax", "text": "Zorblax is a moon."}) + "\n")
    result = runner.invoke(app, ["index", str(corpus), "--out", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    assert "indexed 1 chunks of 1 documents" in result.output
    result = runner.invoke(app, ["ask", str(tmp_path / "missing"), "question?"])
    assert result.exit_code == 2 and "index folder not found" in result.output
