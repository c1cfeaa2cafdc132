from __future__ import annotations

import pytest

from rag.errors import ConfigError, PipelineError, RagError
from rag.pipeline import Pipeline, Stage, State
from rag.registry import ComponentConfig, register
from rag.types import Answer, Chunk, Hit, Prompt


@register("stage", "test_fake_retrieve")
class FakeRetrieve(Stage):
    """Hits whose text is the query repeated `k` times: easy to check by eye."""

    reads = ("query",)
    writes = ("hits",)

    class Config(ComponentConfig):
        k: int = 2

    def run(self, states: list[State]) -> list[dict]:
        for s in states:
            s.hits = [
                Hit(chunk=Chunk(id=f"{s.query}#{i}", doc_id=s.query, text=s.query, start=0,
                                end=len(s.query)), score=1.0 / (i + 1), retriever="fake")
                for i in range(self.config.k)
            ]
        return [{"batch": len(states)} for _ in states]


@register("stage", "test_echo_answer")
class EchoAnswer(Stage):
    reads = ("query", "hits")
    writes = ("prompt", "answer")

    class Config(ComponentConfig):
        upper: bool = False

    def run(self, states: list[State]) -> None:
        for s in states:
            text = " ".join(h.chunk.text for h in s.hits)
            s.prompt = Prompt(text=text)
            s.answer = Answer(query=s.query, text=text.upper() if self.config.upper else text)


def test_a_stage_reading_an_unwritten_field_is_refused_by_name():
    with pytest.raises(PipelineError) as err:
        Pipeline([EchoAnswer(), FakeRetrieve()])
    message = str(err.value)
    assert "stage 0" in message and "test_echo_answer" in message and "'hits'" in message


def test_empty_pipeline_and_unknown_types_are_refused():
    with pytest.raises(PipelineError):
        Pipeline([])
    with pytest.raises(ConfigError, match="unknown stage type 'nope'"):
        Pipeline([{"type": "nope"}])
    with pytest.raises(ConfigError, match="test_fake_retrieve.*k"):
        Pipeline([{"type": "test_fake_retrieve", "k": "many"}])
    with pytest.raises(ConfigError, match="kk: Extra inputs are not permitted"):
        Pipeline([{"type": "test_fake_retrieve", "kk": 3}])


def test_run_batches_queries_and_traces_every_stage():
    pipeline = Pipeline([FakeRetrieve(k=3), EchoAnswer(upper=True)], batch_size=2)
    answers = pipeline.answer(["a", "b", "c"])
    assert [a.text for a in answers] == ["A A A", "B B B", "C C C"]
    trace = answers[2].trace
    assert [t.stage for t in trace] == ["test_fake_retrieve", "test_echo_answer"]
    assert trace[0].sizes == {"hits": 3}
    assert trace[0].batch_size == 1 and answers[0].trace[0].batch_size == 2
    assert trace[0].info == {"batch": 1}
    assert all(t.seconds >= 0 for t in trace)


def test_empty_query_is_refused_before_any_stage_runs():
    pipeline = Pipeline([FakeRetrieve(), EchoAnswer()])
    with pytest.raises(RagError, match="non-empty"):
        pipeline.run(["ok", "   "])


def test_answer_needs_a_stage_that_writes_one():
    with pytest.raises(PipelineError, match="answer"):
        Pipeline([FakeRetrieve()]).answer(["q"])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_through_a_file(tmp_path, suffix):
    pipeline = Pipeline([FakeRetrieve(k=4), EchoAnswer(upper=True)], batch_size=7)
    path = tmp_path / f"p{suffix}"
    pipeline.save(path)
    loaded = Pipeline.load(path)
    assert loaded.to_dict() == pipeline.to_dict()
    assert loaded.ask("x").text == "X X X X"


def test_pipeline_files_are_loaded_safely_and_strictly(tmp_path):
    with pytest.raises(ConfigError):  # safe_load refuses to construct Python objects
        Pipeline.from_yaml("!!python/object/apply:os.system ['echo hacked']")
    with pytest.raises(ConfigError, match="stages"):
        Pipeline.from_yaml("stages: 3")
    broken = tmp_path / "p.json"
    broken.write_text('{"stages": [')
    with pytest.raises(ConfigError, match="p.json: invalid JSON"):
        Pipeline.load(broken)


def test_heavy_components_are_shared_by_config_not_by_spelling():
    from rag.registry import build

    plain = build("encoder", {"type": "sentence_transformers"})
    spelled = build("encoder", plain.spec())
    assert spelled is plain
    assert build("encoder", {**plain.spec(), "batch_size": 7}) is not plain
