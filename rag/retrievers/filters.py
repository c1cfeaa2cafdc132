"""Metadata filters: one small grammar, parsed once into typed nodes, applied inside each index.

The grammar is Haystack's (docs/filters.md), so its users need not learn another:

- a comparison `{"field": F, "operator": OP, "value": V}`, OP one of `==`, `!=`, `>`, `>=`, `<`,
  `<=`, `in`, `not in`;
- a combination `{"operator": "AND" | "OR" | "NOT", "conditions": [filter, ...]}` (NOT: not all
  of its conditions);
- a shorthand `{F: V, G: [V1, V2]}`: equality, or `in` for a list, every entry required.

`doc_id` and `title` name the chunk's own fields; any other F (or `meta.F`) a metadata key. A
chunk without the field matches no comparison (so `NOT` matches it). Ranges compare numbers, or
ISO 8601 date strings in their written order (write them in one timezone), exactly as Milvus
compares them. Filters are checked against the index they search: a field no chunk has, or a
value of a kind the field never holds, is a `FilterError` rather than an empty result.
"""

from __future__ import annotations

import operator as op
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat
from pydantic import StrictInt, StrictStr

from rag.errors import RagError
from rag.types import Chunk

CHUNK_FIELDS = ("doc_id", "title")
RANGES: dict[str, Callable[[Any, Any], bool]] = {">": op.gt, ">=": op.ge, "<": op.lt, "<=": op.le}
COMPARISONS = ("==", "!=", *RANGES, "in", "not in")
LOGIC = ("AND", "OR", "NOT")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?")
MISSING = object()  # a chunk's value for a field it does not have
TYPE_KINDS: dict[type, str] = {bool: "bool", int: "number", float: "number", str: "string"}
KIND_TYPES = {"bool": (bool,), "number": (int, float), "string": (str,)}

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr


class FilterError(RagError):
    """A filter that is malformed, or names a field or a kind of value its index does not hold."""


class Comparison(BaseModel):
    """One field compared with a value (a list of values for `in` and `not in`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    operator: Literal["==", "!=", ">", ">=", "<", "<=", "in", "not in"]
    value: Scalar | list[Scalar]

    def test(self, value: Any) -> bool:
        """Whether one chunk's value of the field satisfies this comparison."""
        return self.predicate()(value)

    def predicate(self) -> Callable[[Any], bool]:
        """`test` as a closure over this comparison's constants (a search calls it per chunk).

        Values compare only with values of their own kind (True is not 1); ranges compare
        numbers, or strings in their written order (ISO dates)."""
        wanted, name = self.value, self.operator
        if isinstance(wanted, list):  # in, not in: a set per value type, so True stays apart
            sets: dict[type, set[Any]] = {}
            for w in wanted:
                for t in KIND_TYPES[kind(w)]:
                    sets.setdefault(t, set()).add(w)
            if name == "in":
                return lambda v: v in sets.get(type(v), ())
            return lambda v: v is not MISSING and v not in sets.get(type(v), ())
        types = KIND_TYPES[kind(wanted)]
        if name in RANGES:
            compare = RANGES[name]
            return lambda v: type(v) in types and compare(v, wanted)
        if name == "==":
            return lambda v: type(v) in types and v == wanted
        return lambda v: type(v) in types and v != wanted

    def matches(self, chunk: Chunk) -> bool:
        return self.test(value_of(chunk, self.field))


class Logic(BaseModel):
    """AND, OR, or NOT (not all) of nested filters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operator: Literal["AND", "OR", "NOT"]
    conditions: list[Comparison | Logic] = Field(min_length=1)

    def matches(self, chunk: Chunk) -> bool:
        if self.operator == "OR":
            return any(c.matches(chunk) for c in self.conditions)
        every = all(c.matches(chunk) for c in self.conditions)
        return not every if self.operator == "NOT" else every


MetadataFilter = Comparison | Logic
# What `Retriever.search` takes: a parsed filter, or its dict form (either grammar).
Filter = MetadataFilter | Mapping[str, Any]


def kind(value: Any) -> str:
    """The kind of a metadata value as filters see it (JSON's): bool, number, string, or its
    type's name."""
    return TYPE_KINDS.get(type(value)) or type(value).__name__


def is_date(value: Any) -> bool:
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def value_of(chunk: Chunk, field: str) -> Any:
    if field in CHUNK_FIELDS:
        return getattr(chunk, field)
    return chunk.metadata.get(metadata_key(field), MISSING)


def metadata_key(field: str) -> str:
    """The metadata key a field names: `meta.year` (Haystack's spelling) and `year` are one."""
    return field.removeprefix("meta.")


# ---- parsing ------------------------------------------------------------------------------


def parse_filter(raw: Filter | None) -> MetadataFilter | None:
    """The typed filter of either dict form (None for no filter or an empty mapping)."""
    if raw is None or isinstance(raw, (Comparison, Logic)):
        return raw
    if not isinstance(raw, Mapping):
        raise FilterError(f"a filter is a mapping, got {type(raw).__name__}: {raw!r}")
    if not raw:
        return None
    if "operator" in raw:
        return _node(raw)
    conditions = [_comparison(field, "in" if _is_list(v) else "==", v) for field, v in raw.items()]
    return conditions[0] if len(conditions) == 1 else Logic(operator="AND", conditions=conditions)


def _node(raw: Mapping[str, Any]) -> MetadataFilter:
    name = raw["operator"]
    if not isinstance(name, str) or (name.upper() not in LOGIC and name.lower() not in COMPARISONS):
        raise FilterError(f"unknown filter operator {name!r} in {dict(raw)!r}; known: "
                          f"{', '.join(COMPARISONS + LOGIC)}")
    keys = {"operator", "conditions"} if name.upper() in LOGIC else {"operator", "field", "value"}
    if set(raw) != keys:
        raise FilterError(f"a filter with operator {name!r} has exactly the keys "
                          f"{sorted(keys)}; got {sorted(raw)}")
    if name.upper() in LOGIC:
        conditions = raw["conditions"]
        if not isinstance(conditions, list) or not conditions:
            raise FilterError(f"{name} needs a non-empty list of conditions, got {conditions!r}")
        parsed = [parse_filter(c) for c in conditions]
        if None in parsed:
            raise FilterError(f"{name} has an empty condition: {conditions!r}")
        return Logic(operator=name.upper(), conditions=parsed)
    if not isinstance(raw["field"], str) or not raw["field"]:
        raise FilterError(f"a filter field is a non-empty string, got {raw['field']!r}")
    return _comparison(raw["field"], name.lower(), raw["value"])


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, set, frozenset))


def _scalar(field: str, value: Any) -> Any:
    """A filter value as stored: dates (YAML reads `2020-01-01` as one) become ISO strings."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if not isinstance(value, (str, int, float)):  # bool is an int
        raise FilterError(f"filter values are strings, numbers, booleans or dates; {field!r} "
                          f"has {value!r} ({type(value).__name__})")
    return value


def _comparison(field: str, name: str, value: Any) -> Comparison:
    if name in ("in", "not in"):
        if not _is_list(value):
            raise FilterError(f"{field!r} {name} needs a list of values, got {value!r}")
        return Comparison(field=field, operator=name, value=[_scalar(field, v) for v in value])
    if _is_list(value):
        raise FilterError(f"{field!r} {name} compares one value, got the list {value!r} "
                          "(use 'in' for a list)")
    value = _scalar(field, value)
    if name in RANGES and not (kind(value) == "number" or is_date(value)):
        raise FilterError(f"{field!r} {name} compares numbers or ISO 8601 dates "
                          f"(2024-05-31, 2024-05-31T12:00:00), got {value!r}")
    return Comparison(field=field, operator=name, value=value)


# The config field of a dense index that switches filtered search to exact search.
ExactBelow = Annotated[float, Field(
    ge=0, le=1, description="a filter keeping under this share of the chunks is searched "
    "exactly over its matches (a graph walk through few matches is slow and may miss)")]

# A config field holding a filter (the `retrieve` stage's): either dict form in, typed inside,
# the canonical form out, so a pipeline file round-trips it.
FilterField = Annotated[MetadataFilter | None, BeforeValidator(parse_filter)]


# ---- applying it to an index --------------------------------------------------------------


def comparisons(node: MetadataFilter) -> Iterable[Comparison]:
    if isinstance(node, Comparison):
        yield node
    else:
        for condition in node.conditions:
            yield from comparisons(condition)


def check(node: MetadataFilter, chunks: Sequence[Chunk]) -> dict[str, list[Any]]:
    """Each field's values over `chunks`, after checking that the index holds every field the
    filter names and values of the kinds it compares them with (a typo is an error, not an
    empty result)."""
    columns = {c.field: column(chunks, c.field) for c in comparisons(node)}
    for comparison in comparisons(node):
        held = {TYPE_KINDS.get(t) or t.__name__
                for t in set(map(type, columns[comparison.field])) if t is not object}
        if not held:
            known = {k for chunk in chunks for k in chunk.metadata} | set(CHUNK_FIELDS)
            raise FilterError(f"unknown filter field {comparison.field!r}: no chunk in the index "
                              f"has it; fields: {', '.join(sorted(known))}")
        values = comparison.value if isinstance(comparison.value, list) else [comparison.value]
        if comparison.operator in RANGES and isinstance(comparison.value, str):
            if not any(is_date(v) for v in columns[comparison.field]):
                raise FilterError(f"{comparison.field!r} {comparison.operator} compares dates, but "
                                  f"the field holds no ISO 8601 dates ({', '.join(sorted(held))})")
        elif wrong := [v for v in values if kind(v) not in held]:
            raise FilterError(f"{comparison.field!r} {comparison.operator} {wrong[0]!r}: the "
                              f"field holds {' and '.join(sorted(held))} values, not "
                              f"{kind(wrong[0])}")
    return columns


def column(chunks: Sequence[Chunk], field: str) -> list[Any]:
    """A field's value in each chunk (MISSING where it has none)."""
    if field in CHUNK_FIELDS:
        return [getattr(chunk, field) for chunk in chunks]
    key = metadata_key(field)
    return [chunk.metadata.get(key, MISSING) for chunk in chunks]


def _evaluate(node: MetadataFilter, columns: dict[str, list[Any]], n: int) -> np.ndarray:
    if isinstance(node, Comparison):
        return np.fromiter(map(node.predicate(), columns[node.field]), dtype=bool, count=n)
    parts = [_evaluate(c, columns, n) for c in node.conditions]
    if node.operator == "OR":
        return np.logical_or.reduce(parts)
    every = np.logical_and.reduce(parts)
    return ~every if node.operator == "NOT" else every


def select(chunks: Sequence[Chunk], filter: Filter | None) -> np.ndarray | None:
    """Which of an index's chunks a filter keeps (None: no filter), checked against them.

    Evaluated a field at a time, so a batch of queries pays one pass over the metadata.
    """
    node = parse_filter(filter)
    if node is None:
        return None
    if not chunks:
        return np.zeros(0, dtype=bool)
    return _evaluate(node, check(node, chunks), len(chunks))


def matches(chunk: Chunk, filter: Filter | None) -> bool:
    """Whether one chunk satisfies a filter (no check against an index)."""
    node = parse_filter(filter)
    return node is None or node.matches(chunk)
