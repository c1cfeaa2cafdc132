from __future__ import annotations

import pytest

from rag.errors import ConfigError, PipelineError, RagError
from rag.pipeline import Pipeline, Stage
from rag.registry import ComponentConfig, register
from rag.state import State, View, state_field
from rag.types import Answer, Chunk, Hit, Prompt, TextDelta, Usage


@register("stage", "test_fake_retrieve")
class FakeRetrieve(Stage):
    """Hits whose text is the query repeated `k` times: easy to check by eye."""

    reads = ("query",)
    writes = ("hits",)

    class Config(ComponentConfig):
        k: int = 2

    def run(self, batch: list[View]) -> list[dict]:
        return [{"hits": [Hit(chunk=Chunk(id=f"{s.query}#{i}", doc_id=s.query, text=s.query, start=0,
                                          end=len(s.query)), score=1.0 / (i + 1), retriever="fake")
                          for i in range(self.config.k)],
                 "trace": {"batch": len(batch)}} for s in batch]


@register("stage", "test_echo_answer")
class EchoAnswer(Stage):
    reads = ("query", "hits")
    writes = ("prompt", "text")

    class Config(ComponentConfig):
        upper: bool = False

    def run(self, batch: list[View]) -> list[dict]:
        out = []
        for s in batch:
            text = " ".join(h.chunk.text for h in s.hits)
            out.append({"prompt": Prompt(text=text),
                        "text": text.upper() if self.config.upper else text})
        return out


@register("stage", "test_sneaky")
class Sneaky(Stage):
    """Misbehaves as configured: reads or writes what it did not declare, or assigns."""

    reads = ("query",)
    writes = ("prompt",)

    class Config(ComponentConfig):
        misdeed: str = "read"

    def run(self, batch: list[View]) -> list[dict]:
        item = batch[0]
        if self.config.misdeed == "read":
            _ = item.hits
        if self.config.misdeed == "assign":
            item.prompt = Prompt(text="x")
        if self.config.misdeed == "write":
            return [{"prompt": Prompt(text="x"), "hits": []}]
        if self.config.misdeed == "omit":
            return [{}]
        return [{"prompt": Prompt(text=item.query)}]


@pytest.mark.parametrize(("misdeed", "message"), [
    ("read", "reads 'hits' without declaring it"),
    ("assign", "assigns 'prompt'"),
    ("write", "writes ['hits'] without declaring"),
    ("omit", "declares it writes ['prompt'] but returned none"),
])
def test_a_stage_outside_its_contract_fails_naming_stage_and_field(misdeed, message):
    pipeline = Pipeline([Sneaky(misdeed=misdeed)])
    with pytest.raises(PipelineError, match="test_sneaky") as err:
        pipeline.run(["q"])
    assert message in str(err.value)


state_field("test_word_count", int | None, description="a field a plug-in package adds")


@register("stage", "test_count_words")
class CountWords(Stage):
    reads = ("query",)
    writes = ("test_word_count",)

    def run(self, batch: list[View]) -> list[dict]:
        return [{"test_word_count": len(item.query.split())} for item in batch]


@register("stage", "test_report_count")
class ReportCount(Stage):
    reads = ("query", "test_word_count")
    writes = ("text",)

    def run(self, batch: list[View]) -> list[dict]:
        return [{"text": str(i.test_word_count)} for i in batch]


def test_a_registered_field_flows_between_stages_and_is_type_checked():
    pipeline = Pipeline([CountWords(), ReportCount()])
    assert pipeline.ask("three little words").text == "3"
    with pytest.raises(PipelineError, match="test_report_count.*test_word_count"):
        Pipeline([ReportCount()])  # nobody writes it earlier
    with pytest.raises(PipelineError, match="test_word_count"):
        State(query="q", test_word_count="many")
    with pytest.raises(ConfigError, match="already registered"):
        state_field("test_word_count", str)


@register("stage", "test_streaming_echo")
class StreamingEcho(Stage):
    """Answers with the query, word by word when streamed."""

    reads = ("query",)
    writes = ("text",)
    streams = True

    def run(self, batch: list[View]) -> list[dict]:
        return [{"text": i.query} for i in batch]

    async def stream(self, item: View):
        for word in item.query.split():
            yield TextDelta(text=word + " ", usage=Usage(completion_tokens=1))

    def streamed(self, item: View, text: str, usage: Usage, finish_reason):
        return {"text": text.strip(), "trace": {"streamed": True}}


def test_stream_yields_the_last_stage_pieces_after_the_earlier_stages_ran():
    import asyncio

    pipeline = Pipeline([CountWords(), StreamingEcho()])

    async def collect():
        stream = pipeline.stream("a b c")
        pieces = [d.text async for d in stream]
        return pieces, stream.answer

    pieces, answer = asyncio.run(collect())
    assert pieces == ["a ", "b ", "c "]
    assert answer.text == pipeline.ask("a b c").text == "a b c"
    assert [t.stage for t in answer.trace] == ["test_count_words", "test_streaming_echo"]
    assert answer.trace[-1].info == {"streamed": True}


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
    with pytest.raises(PipelineError, match="answer 'text'"):
        Pipeline([FakeRetrieve()]).answer(["q"])
    with pytest.raises(PipelineError, match="answer 'text'"):
        Pipeline([FakeRetrieve()]).stream("q")
    (state,) = Pipeline([FakeRetrieve()]).run(["q"])
    assert state.answer is None


@register("stage", "test_answer_builder")
class AnswerBuilder(Stage):
    """Builds the answer itself, as stages did before the pipeline became its one builder."""

    reads = ("query",)
    writes = ("answer",)

    def run(self, batch: list[View]) -> list[dict]:
        return [{"answer": Answer(query=i.query, text=i.query)} for i in batch]


@register("stage", "test_answer_patcher")
class AnswerPatcher(Stage):
    """Reads the answer to change it: there is none until the last stage ran."""

    reads = ("answer",)
    writes = ("text",)

    def run(self, batch: list[View]) -> list[dict]:
        return [{"text": i.answer.text.upper()} for i in batch]


@pytest.mark.parametrize("stage", [AnswerBuilder, AnswerPatcher])
def test_no_stage_builds_or_patches_the_answer(stage):
    with pytest.raises(PipelineError, match=rf"{stage.name}.*\['answer'\].*builds") as err:
        Pipeline([FakeRetrieve(), EchoAnswer(), stage()])
    assert "`text`" in str(err.value)


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


def test_a_state_survives_pickling_with_its_values_and_trace():
    """States cross processes (Ray actors return them to the eval runner)."""
    import pickle

    state = State("Who painted Guernica?")
    state.hits = [Hit(chunk=Chunk(id="g#0", doc_id="g", text="Guernica", start=0, end=8), score=1.0,
                      retriever="bm25")]
    state.trace.append("a trace entry")
    copy = pickle.loads(pickle.dumps(state))
    assert copy.query == state.query and copy.hits == state.hits and copy.trace == state.trace
    assert copy.written() == state.written() == {"query", "hits"}
    with pytest.raises(ConfigError):
        copy.undeclared_field = 1  # still the checked state, not a plain object
