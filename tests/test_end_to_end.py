from __future__ import annotations

import json

from typer.testing import CliRunner

from rag.cli import app
from rag.corpus import vital_articles
from rag.pipeline import Pipeline
from rag.recipes import SPLADE_HYBRID_WEIGHTS, naive_rag
from rag.retrievers import convex, open_index

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
    assert "indexed: 1 added, 0 updated, 0 deleted, 0 unchanged documents" in result.output
    assert "holds 1 chunks of 1 documents" in result.output
    result = runner.invoke(app, ["ask", str(tmp_path / "missing"), "question?"])
    assert result.exit_code == 2 and "index folder not found" in result.output


def test_cli_index_saves_a_three_way_hybrid_by_default_that_fuses_all_three(tmp_path):
    out = tmp_path / "idx"
    result = runner.invoke(app, ["index", "vital-articles", "--limit", "60", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "(hybrid: bm25 + hnsw + splade)" in result.output
    index = open_index(out)
    assert [child.name for child in index.retrievers] == ["bm25", "hnsw", "splade"]
    docs = [d for d in vital_articles()[:60] if d.metadata.get("description")]
    queries = [d.metadata["description"] for d in docs]
    fused = index.search(queries, k=5)
    runs = [child.search(queries, k=100) for child in index.retrievers]
    expected = [convex(per_query, SPLADE_HYBRID_WEIGHTS)[:5] for per_query in zip(*runs)]
    assert [[h.chunk.id for h in hits] for hits in fused] == \
        [[h.chunk.id for h in hits] for hits in expected]
    found = sum(d.id in {h.chunk.doc_id for h in hits} for d, hits in zip(docs, fused))
    assert found >= 0.9 * len(docs)


def test_cli_index_no_splade_builds_two_way_and_an_update_keeps_what_the_index_holds(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "a", "title": "Zorblax", "text": "Zorblax is a moon."}) + "\n")
    out = str(tmp_path / "idx")
    built = runner.invoke(app, ["index", str(corpus), "--out", out, "--no-splade"])
    assert built.exit_code == 0 and "(hybrid: bm25 + hnsw)" in built.output, built.output
    corpus.write_text(corpus.read_text() + json.dumps({"id": "b", "text": "Quillon is a planet."}) + "\n")
    updated = runner.invoke(app, ["index", str(corpus), "--out", out])  # no flag: as it is
    assert updated.exit_code == 0 and "1 added" in updated.output, updated.output
    assert [child.name for child in open_index(out).retrievers] == ["bm25", "hnsw"]
    refused = runner.invoke(app, ["index", str(corpus), "--out", out, "--splade"])
    assert refused.exit_code != 0 and "holds bm25 + hnsw indexes" in refused.output
