"""Indexing on Ray Data (a local cluster) writes what the in-process path writes."""

from __future__ import annotations

import numpy as np
import pytest

from rag.errors import IndexExistsError
from rag.retrievers import open_index

ray = pytest.importorskip("ray")  # the `scale` extra; `make test` installs it


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_the_ray_built_index_equals_the_in_process_one(local_cluster, vital_slice, tmp_path):
    from rag.distributed.indexing import ray_index_corpus
    from rag.recipes import index_corpus

    docs = vital_slice[:60]
    ours = ray_index_corpus(docs, tmp_path / "ray", chunk_size=120, actors=2, batch_size=16)
    theirs = index_corpus(docs, tmp_path / "local", chunk_size=120, progress=False)
    a, b = ours.retrievers[1], theirs.retrievers[1]
    assert len(a.chunks) > len(docs)  # several chunks per document: chunking really ran there
    assert [c.model_dump() for c in a.chunks] == [c.model_dump() for c in b.chunks]
    assert np.abs(np.asarray(a.vectors) - np.asarray(b.vectors)).max() < 1e-4
    reopened = open_index(tmp_path / "ray")
    queries = [d.metadata["description"] for d in docs[:10]]
    assert [[h.chunk.id for h in hits] for hits in reopened.search(queries, k=5)] == \
           [[h.chunk.id for h in hits] for hits in theirs.search(queries, k=5)]
    with pytest.raises(IndexExistsError, match="without --ray"):
        ray_index_corpus(docs, tmp_path / "ray")


def test_rag_index_ray_writes_a_hybrid_folder(local_cluster, tmp_path):
    from typer.testing import CliRunner

    from rag.cli import app

    result = CliRunner().invoke(app, ["index", "vital-articles", "--limit", "12", "--out",
                                      str(tmp_path / "idx"), "--ray", "--actors", "1"])
    assert result.exit_code == 0, result.output
    assert "indexed" in result.output and "on Ray" in result.output
    assert len(open_index(tmp_path / "idx")) >= 12


def test_a_ray_eval_gives_the_in_process_predictions_and_resumes(local_cluster, tmp_path):
    from rag.distributed.evaluation import ray_runner
    from rag.eval.datasets import vital_qa
    from rag.eval.runner import QAPrediction, load_cache, run_qa
    from rag.recipes import closed_book

    pipeline = closed_book({"type": "transformers", "model": "tiny"}, max_tokens=12)
    questions = vital_qa(8)
    here = run_qa(pipeline, questions, tmp_path / "here", batch_size=2, progress=False)
    runner = ray_runner(actors=2)
    run_qa(pipeline, questions[:3], tmp_path / "ray", batch_size=2, progress=False, runner=runner)
    there = run_qa(pipeline, questions, tmp_path / "ray", batch_size=2, progress=False, runner=runner)
    assert [p.answer for p in there] == [p.answer for p in here]  # greedy: the same answers
    lines = (tmp_path / "ray" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(questions)  # the resumed run answered only the 5 left
    assert set(load_cache(tmp_path / "ray" / "predictions.jsonl", QAPrediction)) == {q.id for q in questions}


def test_a_ray_serve_deployment_answers_through_the_openai_client(local_cluster):
    """Two replicas of the same app behind Ray's proxy, asked with the real `openai` client."""
    import socket

    from openai import OpenAI
    from ray import serve

    from rag.distributed.serving import APP_NAME, serve_on_ray
    from rag.serving import ServeConfig

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ServeConfig(models={"tiny": {"type": "transformers", "model": "tiny"}}, port=port)
    try:
        serve_on_ray(config, replicas=2, blocking=False, cpus_per_replica=0.5)
        status = serve.status().applications[APP_NAME].deployments["OpenAIServer"]
        assert status.status == "HEALTHY" and status.replica_states.get("RUNNING") == 2
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        assert [m.id for m in client.models.list().data] == ["tiny"]
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8,
            temperature=0)
        assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    finally:
        serve.shutdown()
