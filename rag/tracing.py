"""OpenTelemetry spans of pipeline runs: one span per query (`rag.pipeline`), and under it one
per stage (`rag.stage <name>`) with its seconds, batch size, the sizes it wrote and its token
counts.

Off unless `opentelemetry` is importable and traces have somewhere to go: a tracer provider set
in code (the SDK's, e.g. with the in-memory exporter), or the usual environment variables
(`OTEL_TRACES_EXPORTER` = `otlp` or `console`, or `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SERVICE_NAME`, default `rag-icl`). Spans are made
from each query's stage trace once its answer is built, so with tracing off a run pays one
check per batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from rag.types import StageTrace

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def _from_environment() -> Any:
    """An SDK tracer provider exporting where the OTEL_* variables say, or None."""
    name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not name and any(os.environ.get(v) for v in ENDPOINTS):
        name = "otlp"
    if name in ("", "none"):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if name == "console":
        exporter: Any = ConsoleSpanExporter()
    elif os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        exporter = HttpExporter()
    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "rag-icl")}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


@lru_cache(maxsize=1)
def _configured_from_environment() -> Any:
    """The environment's provider, made once and set as the global one (so other libraries'
    spans go to the same place)."""
    provider = _from_environment()
    if provider is not None:
        from opentelemetry import trace

        trace.set_tracer_provider(provider)
    return provider


def tracer() -> Any:
    """The tracer spans go to, or None when tracing is off."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        provider = _configured_from_environment()
        if provider is None:
            return None
    return provider.get_tracer("rag")


def export_spans(runs: Sequence[tuple[str, Sequence[StageTrace]]],
                 ended_ns: int | None = None) -> None:
    """Each (query, stage trace) run as spans ending now (or at `ended_ns`): its stages ran one
    after another, each for its batch's seconds, so each span's start follows from the
    durations. Nothing happens when tracing is off."""
    chosen = tracer()
    if chosen is None:
        return
    from opentelemetry import trace

    end = ended_ns or time.time_ns()
    for query, steps in runs:
        start = end - int(sum(s.seconds for s in steps) * 1e9)
        root = chosen.start_span("rag.pipeline", start_time=start, attributes={
            "rag.query_chars": len(query), "rag.stages": len(steps)})
        context = trace.set_span_in_context(root)
        at = start
        for step in steps:
            attributes: dict[str, Any] = {"rag.stage": step.stage, "rag.seconds": step.seconds,
                                          "rag.batch_size": step.batch_size}
            attributes |= {f"rag.wrote.{field}": size for field, size in step.sizes.items()}
            attributes |= {f"rag.{key}": value for key, value in step.info.items()
                           if isinstance(value, (int, float, str, bool))}
            span = chosen.start_span(f"rag.stage {step.stage}", context=context, start_time=at,
                                     attributes=attributes)
            at += int(step.seconds * 1e9)
            span.end(end_time=at)
        root.end(end_time=end)
