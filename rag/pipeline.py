"""A pipeline: ordered stages over a typed per-query state, under an enforced contract.

Each stage declares the state fields it reads and writes. The pipeline checks at build time that
every read is written by an earlier stage (or comes with the query), shows each stage only what
it declared to read, and applies what it returns only if it is exactly what it declared to write;
it runs stages batch by batch so model calls are batched, and records every stage's wall time,
output sizes and its own notes in the state's trace. No stage builds the `Answer`: stages write
its fields (`text`, `supported`, `agreement`, ...) and the pipeline builds it once, after the last
stage (`rag.answers.build_answer`). `stream` runs the stages before the last and then yields the
last stage's tokens as they are made.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from tqdm.auto import tqdm

from rag.answers import build_answer
from rag.errors import ConfigError, PipelineError, RagError
from rag.registry import Component, build
from rag.state import BUILT, FIELDS, RESERVED, State, View, given_fields
from rag.storage import atomic_write_text
from rag.tracing import export_spans
from rag.types import Answer, StageTrace, TextDelta, Usage

T = TypeVar("T")
R = TypeVar("R")

TRACE_KEY = "trace"  # a stage's per-state notes for the trace, returned beside its writes
Writes = dict[str, Any]


class Stage(Component):
    """A pipeline step over a batch of states.

    `run` receives one `View` per state (only the `reads` and `optional_reads` fields) and returns
    one dict per state holding every field of `writes`, plus optionally `"trace"`: a dict of
    notes for the trace. A stage that can stream its text sets `streams` and implements `stream`
    and `streamed`.
    """

    kind = "stage"
    reads: ClassVar[tuple[str, ...]] = ()
    optional_reads: ClassVar[tuple[str, ...]] = ()  # read when present, else the field's default
    writes: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[bool] = False

    def run(self, batch: list[View]) -> list[Writes]:
        raise NotImplementedError

    def stream(self, item: View) -> AsyncIterator[TextDelta]:
        """The text this stage makes for one state, piece by piece (when `streams`)."""
        raise NotImplementedError(f"stage {self.name!r} does not stream")

    def streamed(self, item: View, text: str, usage: Usage, finish_reason: str | None) -> Writes:
        """The writes for one state once its streamed text is complete."""
        raise NotImplementedError(f"stage {self.name!r} does not stream")


def _size(value: Any) -> int:
    if isinstance(value, (list, str)):
        return len(value)
    return 0 if value is None else 1


def per_setting(settings: Sequence[tuple[str, T]],
                call: Callable[[T, list[int]], Sequence[R]]) -> list[R]:
    """One `call` per distinct setting among a batch's items (settings given as (key, value) in
    the batch's order), with the positions of the items that share it; the results come back in
    the batch's order. Stages whose items may carry their own settings (a request's sampling or
    retrieval) still make one call for a batch that carries none."""
    groups: dict[str, tuple[T, list[int]]] = {}
    for i, (key, setting) in enumerate(settings):
        groups.setdefault(key, (setting, []))[1].append(i)
    made: dict[int, R] = {}
    for setting, members in groups.values():
        made.update(zip(members, call(setting, members), strict=True))
    return [made[i] for i in range(len(settings))]


def stage_view(stage: Stage, state: State) -> View:
    return View(state, stage.name, (*stage.reads, *stage.optional_reads))


def apply_writes(stage: Stage, label: str, batch: list[State], outputs: Any, seconds: float) -> None:
    """Check a stage's return value against its declared writes, then apply and trace it."""
    where = f"{label} ({stage.name!r})"
    if not isinstance(outputs, list) or len(outputs) != len(batch):
        raise PipelineError(f"{where} must return one dict per state ({len(batch)})")
    declared = set(stage.writes)
    for state, out in zip(batch, outputs):
        if not isinstance(out, dict):
            raise PipelineError(f"{where} returned {type(out).__name__}, not a dict of writes")
        values = {k: v for k, v in out.items() if k != TRACE_KEY}
        if extra := set(values) - declared:
            raise PipelineError(f"{where} writes {sorted(extra)} without declaring them in `writes`")
        if missing := declared - set(values):
            raise PipelineError(f"{where} declares it writes {sorted(missing)} but returned none")
        for name, value in values.items():
            state.set(name, value)
        state.trace.append(StageTrace(
            stage=stage.name, seconds=seconds, batch_size=len(batch),
            sizes={f: _size(values[f]) for f in stage.writes}, info=out.get(TRACE_KEY) or {},
        ))


def run_stage(stage: Stage, states: list[State], label: str = "stage") -> list[dict[str, Any]]:
    """Run one stage on prepared states under the same contract as in a pipeline (handy for
    tests and notebooks); returns each state's trace notes."""
    began = time.perf_counter()
    outputs = stage.run([stage_view(stage, s) for s in states])
    apply_writes(stage, label, states, outputs, time.perf_counter() - began)
    return [s.trace[-1].info for s in states]


class Pipeline:
    """Ordered stages, validated when built, runnable on batches of queries."""

    def __init__(self, stages: Sequence[Stage | dict[str, Any]], batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.stages: list[Stage] = [build("stage", s) for s in stages]
        self.batch_size = batch_size
        self._validate()

    def _validate(self) -> None:
        if not self.stages:
            raise PipelineError("a pipeline needs at least one stage")
        written = given_fields()
        for i, stage in enumerate(self.stages):
            for field in (*stage.reads, *stage.optional_reads, *stage.writes):
                if field not in FIELDS:
                    raise PipelineError(
                        f"stage {i} ({stage.name!r}) names unknown state field {field!r}; "
                        f"fields: {', '.join(sorted(FIELDS))}"
                    )
            if reserved := RESERVED & set(stage.writes):
                raise PipelineError(f"stage {i} ({stage.name!r}) cannot write {sorted(reserved)}")
            if built := BUILT & {*stage.reads, *stage.optional_reads, *stage.writes}:
                raise PipelineError(
                    f"stage {i} ({stage.name!r}) names {sorted(built)}, which the pipeline builds "
                    "after the last stage; a stage writes its fields (`text`, `supported`, ...)"
                )
            for field in stage.reads:
                if field not in written:
                    raise PipelineError(
                        f"stage {i} ({stage.name!r}) reads {field!r}, which no earlier stage "
                        f"writes; stages so far write {sorted(written - given_fields())}"
                    )
            written.update(stage.writes)

    @property
    def writes(self) -> set[str]:
        return {field for stage in self.stages for field in stage.writes}

    @property
    def answers(self) -> bool:
        """Whether a run ends with an `Answer`: some stage writes its `text`."""
        return "text" in self.writes

    # ---- running -------------------------------------------------------------------------

    @staticmethod
    def _states(queries: Iterable[str | State]) -> list[State]:
        states = [q if isinstance(q, State) else State(query=q) for q in queries]
        for state in states:
            if not state.query.strip():
                raise RagError("every query must be a non-empty string")
        return states

    def _apply(self, index: int, batch: list[State], outputs: Any, seconds: float) -> None:
        apply_writes(self.stages[index], f"stage {index}", batch, outputs, seconds)

    def _run_stage(self, index: int, batch: list[State]) -> None:
        run_stage(self.stages[index], batch, f"stage {index}")

    @staticmethod
    def _finish(states: Sequence[State]) -> None:
        """Build each state's `Answer` from what the stages wrote, once they all ran, and trace
        each run (`rag.tracing`: only when an OpenTelemetry exporter is configured)."""
        for state in states:
            if state.text is None:
                continue
            usage = state.generation.usage if state.generation is not None else Usage()
            state.answer = build_answer(
                state.query, state.text, sources=state.sources, hits=state.hits, usage=usage,
                supported=state.supported, agreement=state.agreement, trace=state.trace,
            )
        export_spans([(state.query, state.trace) for state in states])

    def run(self, queries: Iterable[str | State], progress: bool = False) -> list[State]:
        """Run every query through every stage, `batch_size` queries at a time."""
        states = self._states(queries)
        bar = tqdm(total=len(states), desc="pipeline", unit="query", disable=not progress)
        for start in range(0, len(states), self.batch_size):
            batch = states[start : start + self.batch_size]
            for index in range(len(self.stages)):
                self._run_stage(index, batch)
            self._finish(batch)
            bar.update(len(batch))
        bar.close()
        return states

    def answer(self, queries: Iterable[str | State], progress: bool = False) -> list[Answer]:
        """Run the pipeline and return its answers (some stage must write the answer's `text`)."""
        if not self.answers:
            raise PipelineError("this pipeline writes no answer 'text'; run() gives the states")
        return [s.answer for s in self.run(queries, progress=progress)]  # type: ignore[misc]

    def ask(self, query: str) -> Answer:
        return self.answer([query])[0]

    def stream(self, query: str | State) -> AnswerStream:
        """The last stage's text as it is made, after the earlier stages ran; then `.answer`."""
        if not self.answers:
            raise PipelineError("this pipeline writes no answer 'text' to stream")
        (state,) = self._states([query])
        return AnswerStream(self, state)

    # ---- serialization -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "stages": [s.spec() for s in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pipeline:
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
            raise ConfigError("a pipeline spec is a mapping with a 'stages' list")
        unknown = set(data) - {"stages", "batch_size"}
        if unknown:
            raise ConfigError(f"unknown pipeline keys: {sorted(unknown)}")
        return cls(data["stages"], batch_size=data.get("batch_size", 32))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Pipeline:
        try:
            data = yaml.safe_load(text)  # safe_load: a pipeline file never constructs objects
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid pipeline YAML: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write YAML (`.yaml`/`.yml`) or JSON (anything else), atomically."""
        path = Path(path)
        if path.suffix in {".yaml", ".yml"}:
            atomic_write_text(path, self.to_yaml())
        else:
            atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no pipeline file at {path}")
        text = path.read_text()
        if path.suffix in {".yaml", ".yml"}:
            return cls.from_yaml(text)
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None


class AnswerStream:
    """Async iterator over the final stage's `TextDelta`s; `answer` is set once it is exhausted.

    Stages before the last run in a worker thread; a last stage that cannot stream runs whole and
    its answer arrives as one delta.
    """

    def __init__(self, pipeline: Pipeline, state: State) -> None:
        self.pipeline, self.state = pipeline, state
        self.answer: Answer | None = None

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        pipeline, state = self.pipeline, self.state
        last = len(pipeline.stages) - 1
        for index in range(last):
            await asyncio.to_thread(pipeline._run_stage, index, [state])
        stage = pipeline.stages[last]
        if not stage.streams:
            await asyncio.to_thread(pipeline._run_stage, last, [state])
            pipeline._finish([state])
            answer = state.answer
            yield TextDelta(text=answer.text, finish_reason="stop", usage=answer.usage)
        else:
            view = stage_view(stage, state)
            began, pieces, final = time.perf_counter(), [], None
            async for delta in stage.stream(view):
                pieces.append(delta.text)
                final = delta
                yield delta
            usage = final.usage if final is not None else Usage()
            out = stage.streamed(view, "".join(pieces), usage, final and final.finish_reason)
            pipeline._apply(last, [state], [out], time.perf_counter() - began)
            pipeline._finish([state])
        self.answer = state.answer
