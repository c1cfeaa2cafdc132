"""The per-query state a pipeline carries, with an open, typed set of fields.

Fields are registered by name with their type: the core ones here, others by the package that
owns them (`rag.verifiers` registers `programs` and `executions`, for instance), so a new kind of
stage never means editing the pipeline. Every write is validated against the field's type. A
stage sees a `View` of a state: the fields it declared to read, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from rag.errors import ConfigError, PipelineError
from rag.types import (
    Answer,
    Citation,
    Demo,
    Generation,
    Hit,
    Message,
    Prompt,
    RetrievalOverride,
    SamplingOverride,
)


@dataclass(frozen=True)
class StateField:
    """A registered per-query field. `given`: may come with the query, before any stage."""

    name: str
    annotation: Any
    default: Callable[[], Any]
    description: str
    given: bool
    adapter: TypeAdapter


FIELDS: dict[str, StateField] = {}
RESERVED = frozenset({"trace"})  # the pipeline's own record; no stage writes it
# Built by the pipeline from the fields stages write (`rag.answers.build_answer`), after the last
# stage: no stage reads or writes it, so an answer has one builder.
BUILT = frozenset({"answer"})


def state_field(
    name: str, annotation: Any, *, default: Callable[[], Any] = lambda: None,
    description: str = "", given: bool = False,
) -> StateField:
    """Register a field; registering the same name again with the same type is a no-op."""
    if not name.isidentifier() or name.startswith("_") or name in RESERVED:
        raise ConfigError(f"{name!r} cannot name a state field")
    known = FIELDS.get(name)
    if known is not None:
        if known.annotation != annotation or known.given != given:
            raise ConfigError(f"state field {name!r} is already registered as {known.annotation}")
        return known
    field = StateField(name, annotation, default, description, given, TypeAdapter(annotation))
    FIELDS[name] = field
    return field


def field_named(name: str) -> StateField:
    try:
        return FIELDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown state field {name!r}; registered: {', '.join(sorted(FIELDS))}"
        ) from None


def given_fields() -> set[str]:
    return {name for name, field in FIELDS.items() if field.given}


state_field("query", str, description="the user's question or task", given=True)
state_field("history", list[Message], default=list, given=True,
            description="earlier chat turns, oldest first")
state_field("sampling", SamplingOverride | None, given=True,
            description="the request's own decoding settings; a stage that reads it lays them "
            "over its configured params and honours every field it sets")
state_field("retrieval", RetrievalOverride | None, given=True,
            description="the request's own filter and k; a retrieve stage that reads it uses them "
            "instead of its configured ones")
state_field("standalone", str | None,
            description="the query as a self-contained question, for retrieval: a follow-up "
            "rewritten with its conversation (`condense`); None: the query itself")
state_field("hits", list[Hit], default=list, description="retrieved passages, best first")
state_field("demos", list[Demo], default=list, description="demonstrations, most relevant first")
state_field("sources", list[Citation], default=list, description="passages the prompt shows")
state_field("prompt", Prompt | None, description="what the generator reads")
state_field("generation", Generation | None, description="every sampled completion")
state_field("text", str | None,
            description="the answer's text, as the last stage that made or chose it wrote it")
state_field("supported", bool | None,
            description="grounding verdict: do the passages support the text? None: unchecked")
state_field("agreement", float | None,
            description="share of sampled answers that agree with the text (self-consistency)")
state_field("answer", Answer | None,
            description="the result for the user, built by the pipeline once every stage ran")


class State:
    """Everything known about one query while it moves through the stages."""

    __slots__ = ("_values", "trace")

    def __init__(self, query: str, **values: Any) -> None:
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "trace", [])
        self.set("query", query)
        for name, value in values.items():
            self.set(name, value)

    def set(self, name: str, value: Any) -> None:
        field = field_named(name)
        try:
            self._values[name] = field.adapter.validate_python(value)
        except ValidationError as exc:
            raise PipelineError(f"state field {name!r} cannot hold this value: {exc}") from None

    def __getattr__(self, name: str) -> Any:
        field = FIELDS.get(name)
        if field is None:
            raise AttributeError(f"State has no field {name!r}")
        values = self._values
        if name not in values:
            values[name] = field.default()
        return values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        self.set(name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its values and trace, so states cross processes (Ray actors, spawn)."""
        return _restore, (self._values, self.trace)

    def written(self) -> set[str]:
        return set(self._values)

    def __repr__(self) -> str:
        return f"State({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


class View:
    """One state as a stage sees it: only the declared reads; writes go through return values."""

    __slots__ = ("_state", "_stage", "_reads")

    def __init__(self, state: State, stage: str, reads: Iterable[str]) -> None:
        object.__setattr__(self, "_state", state)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_reads", frozenset(reads))

    def __getattr__(self, name: str) -> Any:
        if name in self._reads:
            return getattr(self._state, name)
        raise PipelineError(
            f"stage {self._stage!r} reads {name!r} without declaring it; add it to the stage's "
            f"`reads` (it declares {sorted(self._reads)})"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise PipelineError(
            f"stage {self._stage!r} assigns {name!r}: a stage returns its writes, one dict per state"
        )


def _restore(values: dict[str, Any], trace: list[Any]) -> State:
    """A pickled state back, its values already validated where it was made."""
    state = State.__new__(State)
    object.__setattr__(state, "_values", values)
    object.__setattr__(state, "trace", trace)
    return state
