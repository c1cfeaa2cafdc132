"""A pipeline: ordered stages over a typed per-query state.

Each stage declares the state fields it reads and writes. The pipeline checks at build time that
every read is written by an earlier stage (or is an input), runs stages batch by batch so model
calls are batched, and records every stage's wall time and output sizes in the state's trace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from rag.errors import ConfigError, PipelineError, RagError
from rag.registry import Component, build
from rag.storage import atomic_write_text
from rag.types import Answer, Citation, Demo, Generation, Hit, Message, Prompt, StageTrace

INPUT_FIELDS = frozenset({"query", "history"})


class State(BaseModel):
    """Everything known about one query while it moves through the stages."""

    query: str
    history: list[Message] = Field(default_factory=list)
    hits: list[Hit] = Field(default_factory=list)
    demos: list[Demo] = Field(default_factory=list)
    sources: list[Citation] = Field(default_factory=list)
    prompt: Prompt | None = None
    generation: Generation | None = None
    answer: Answer | None = None
    trace: list[StageTrace] = Field(default_factory=list)


STATE_FIELDS = frozenset(State.model_fields) - {"trace"}


class Stage(Component):
    """A pipeline step: reads some state fields of a batch of states and writes others."""

    kind = "stage"
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()

    def run(self, states: list[State]) -> list[dict[str, Any]] | None:
        """Fill the `writes` fields of every state; may return per-state info for the trace."""
        raise NotImplementedError


def _size(value: Any) -> int:
    if isinstance(value, (list, str)):
        return len(value)
    return 0 if value is None else 1


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
        written = set(INPUT_FIELDS)
        for i, stage in enumerate(self.stages):
            for field in (*stage.reads, *stage.writes):
                if field not in STATE_FIELDS:
                    raise PipelineError(
                        f"stage {i} ({stage.name!r}) names unknown state field {field!r}; "
                        f"fields: {', '.join(sorted(STATE_FIELDS))}"
                    )
            for field in stage.reads:
                if field not in written:
                    raise PipelineError(
                        f"stage {i} ({stage.name!r}) reads {field!r}, which no earlier stage "
                        f"writes; stages so far write {sorted(written)}"
                    )
            written.update(stage.writes)

    @property
    def writes(self) -> set[str]:
        return {field for stage in self.stages for field in stage.writes}

    # ---- running -------------------------------------------------------------------------

    def run(
        self, queries: Iterable[str | State], progress: bool = False
    ) -> list[State]:
        """Run every query through every stage, `batch_size` queries at a time."""
        states = [q if isinstance(q, State) else State(query=q) for q in queries]
        for state in states:
            if not isinstance(state.query, str) or not state.query.strip():
                raise RagError("every query must be a non-empty string")
        bar = tqdm(total=len(states), desc="pipeline", unit="query", disable=not progress)
        for start in range(0, len(states), self.batch_size):
            batch = states[start : start + self.batch_size]
            for stage in self.stages:
                began = time.perf_counter()
                infos = stage.run(batch) or [{} for _ in batch]
                seconds = time.perf_counter() - began
                for state, info in zip(batch, infos, strict=True):
                    sizes = {f: _size(getattr(state, f)) for f in stage.writes}
                    state.trace.append(
                        StageTrace(
                            stage=stage.name, seconds=seconds, batch_size=len(batch),
                            sizes=sizes, info=info,
                        )
                    )
            for state in batch:
                if state.answer is not None:
                    state.answer.trace = state.trace
            bar.update(len(batch))
        bar.close()
        return states

    def answer(self, queries: Iterable[str | State], progress: bool = False) -> list[Answer]:
        """Run the pipeline and return its answers (the last stage must write `answer`)."""
        if "answer" not in self.writes:
            raise PipelineError("this pipeline writes no 'answer'; use run() to get the states")
        return [s.answer for s in self.run(queries, progress=progress)]  # type: ignore[misc]

    def ask(self, query: str) -> Answer:
        return self.answer([query])[0]

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
