"""OpenTelemetry spans of a pipeline run, read with the SDK's in-memory exporter."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rag.pipeline import Pipeline, Stage
from rag.registry import register
from rag.retrievers import BM25Retriever
from rag.retrievers.stage import Retrieve
from rag.state import View
from rag.tracing import _from_environment
from rag.types import Chunk


@register("stage", "test_tracing_answer")
class CountingAnswer(Stage):
    """An answer naming how many passages it read, with a token count in its trace."""

    reads = ("hits",)
    writes = ("text",)

    def run(self, batch: list[View]) -> list[dict]:
        return [{"text": f"{len(item.hits)} passages", "trace": {"prompt_tokens": 7}}
                for item in batch]


@pytest.fixture()
def spans():
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first SDK provider of this process
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def test_each_query_is_a_span_with_one_child_per_stage(spans):
    index = BM25Retriever()
    index.index([Chunk(id=f"c{i}", doc_id=f"d{i}", text=f"widget part {i}", start=0, end=13)
                 for i in range(5)])
    pipeline = Pipeline([Retrieve(index, k=2), {"type": "test_tracing_answer"}])
    pipeline.run(["widget part", "part 3"])
    finished = spans.get_finished_spans()
    roots = [s for s in finished if s.name == "rag.pipeline"]
    assert len(roots) == 2
    for root in roots:
        children = sorted((s for s in finished if s.parent and s.parent.span_id == root.context.span_id),
                          key=lambda s: s.start_time)
        assert [s.name for s in children] == ["rag.stage retrieve", "rag.stage test_tracing_answer"]
        assert children[0].attributes["rag.wrote.hits"] == 2
        assert children[0].attributes["rag.batch_size"] == 2
        assert children[1].attributes["rag.prompt_tokens"] == 7
        assert root.start_time <= children[0].start_time <= children[1].start_time
        assert children[1].end_time <= root.end_time


def test_nothing_is_exported_unless_the_environment_names_an_exporter(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert _from_environment() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert _from_environment() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert isinstance(_from_environment(), TracerProvider)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert isinstance(_from_environment(), TracerProvider)
