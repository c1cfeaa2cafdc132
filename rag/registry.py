"""Components registered by kind and name, so pipelines round-trip through YAML and JSON.

A component is a class with a pydantic `Config`; its spec is `{"type": name, **config}`. Specs of
nested components (a stage's retriever, a retriever's encoder) are plain dicts inside the outer
config, so the whole pipeline serializes as one tree. Heavy components (generators, encoders) are
shared: building the same spec twice in a process returns the same object, so one vLLM engine
serves every stage, every pipeline and every test in a session.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from rag.errors import ConfigError, RagError

# Kind -> modules whose import registers that kind's built-in components.
_KIND_MODULES: dict[str, tuple[str, ...]] = {
    "stage": (
        "rag.retrievers.stage", "rag.rerankers.stage", "rag.compression.stage", "rag.prompts.stage",
        "rag.generators.stage", "rag.verifiers.stage", "rag.selectors.stage", "rag.kvcache.stage",
    ),
    "generator": ("rag.generators",),
    "encoder": ("rag.encoders",),
    "retriever": ("rag.retrievers",),
    "reranker": ("rag.rerankers",),
    "compressor": ("rag.compression",),
    "chunker": ("rag.chunkers",),
    "selector": ("rag.selectors",),
    "embedder": ("rag.chunkers",),
}
_SHARED_KINDS = {"generator", "encoder"}

_REGISTRY: dict[str, dict[str, type[Component]]] = {}
_SHARED: dict[str, Component] = {}

C = TypeVar("C", bound="type[Component]")


class ComponentConfig(BaseModel):
    """Base of component configs: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Component:
    """Base of everything a pipeline file can name.

    Subclasses set `kind`, get a `name` from `@register`, and declare a nested `Config`
    (a `ComponentConfig`). Constructors take the config's fields as keyword arguments, or
    positionally in the order the config declares them. A field named in `nested` holds a nested
    component: it accepts the component, its spec or its bare type name (a list of them for a
    list field; None for the config's default), and this base class validates the whole config
    first, then builds each nested component into the attribute of the field's name. The config
    keeps the nested specs themselves, not stubs, so `config.retriever` is a spec that rebuilds
    the retriever.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    # Config field -> kind of the component(s) it holds. Their specs in `spec()` are taken from
    # the live components when it is called, so an index saved after construction names its path.
    nested: ClassVar[dict[str, str]] = {}

    class Config(ComponentConfig):
        pass

    config: BaseModel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs = _by_name(type(self), args, kwargs)
        given = {f: v for f in self.nested if (v := kwargs.pop(f, None)) is not None}
        declared = {f: _each(value, _declared) for f, value in given.items()}
        self.config = validate_config(type(self), {**kwargs, **declared})  # before building
        for field, kind in self.nested.items():
            held, source = getattr(self.config, field), given.get(field)
            if isinstance(held, list):
                value = [_built(kind, s, g) for s, g in zip(held, source or [None] * len(held))]
            else:
                value = None if held is None else _built(kind, held, source)
            setattr(self, field, value)

    def spec(self) -> dict[str, Any]:
        """The dict that `build(kind, spec)` turns back into an equivalent component."""
        data = {"type": self.name, **self.config.model_dump(mode="json")}
        for field in self.nested:
            data[field] = _each(getattr(self, field), lambda c: c.spec())
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def _each(value: Any, convert: Callable[[Any], Any]) -> Any:
    """`convert` applied to a nested field's value: one component, a list of them, or None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [convert(v) for v in value]
    return convert(value)


def _declared(value: Component | dict[str, Any] | str) -> Any:
    """The spec of a nested component as its config holds it. A component given built gives its
    `spec()`, or, when it has none a file could rebuild (an index or a pool only in memory, which
    a stage may hold until it is saved), its config."""
    if isinstance(value, Component):
        try:
            return value.spec()
        except RagError:
            return {"type": value.name, **value.config.model_dump(mode="json")}
    return {"type": value} if isinstance(value, str) else value


def _built(kind: str, spec: dict[str, Any], given: Any) -> Any:
    """A nested component: the one given, when it came built (so it stays shared, and an index
    in memory stays the same object), else the one its validated spec names."""
    return build(kind, given if isinstance(given, Component) else spec)


def _by_name(cls: type[Component], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Positional constructor arguments named by the config's fields, in declared order."""
    fields = list(cls.Config.model_fields)
    if len(args) > len(fields):
        raise ConfigError(f"{cls.kind} {cls.name!r} takes at most {len(fields)} positional "
                          f"arguments ({', '.join(fields)}), got {len(args)}")
    named = dict(zip(fields, args))
    if twice := sorted(named.keys() & kwargs.keys()):
        raise ConfigError(f"{cls.kind} {cls.name!r} got {twice} both by position and by name")
    return {**named, **kwargs}


def register(kind: str, name: str) -> Callable[[C], C]:
    """Class decorator: make `cls` buildable as `{"type": name}` where a `kind` is expected."""

    def wrap(cls: C) -> C:
        known = _REGISTRY.setdefault(kind, {})
        if name in known and known[name] is not cls:
            raise ConfigError(f"{kind} type {name!r} is already registered by {known[name]}")
        cls.kind, cls.name = kind, name
        known[name] = cls
        return cls

    return wrap


def registered(kind: str) -> dict[str, type[Component]]:
    """All component classes of one kind, by name (importing the built-in ones first)."""
    modules = _KIND_MODULES.get(kind)
    if modules is None:
        raise ConfigError(f"unknown component kind {kind!r}; known: {sorted(_KIND_MODULES)}")
    for module in modules:
        importlib.import_module(module)
    return dict(_REGISTRY.get(kind, {}))


def validate_config(cls: type[Component], values: dict[str, Any]) -> BaseModel:
    """Validate `values` into `cls.Config`, naming the component and the field on failure."""
    try:
        return cls.Config.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(config)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid config for {cls.kind} {cls.name!r}: {problems}") from None


def build(kind: str, spec: Component | dict[str, Any] | str) -> Any:
    """Turn a spec (or a bare type name) into a component of `kind`; pass components through."""
    if isinstance(spec, Component):
        if spec.kind != kind:
            raise ConfigError(f"expected a {kind}, got the {spec.kind} {spec.name!r}")
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"a {kind} spec must be a mapping with a 'type' key, got {spec!r}")
    classes = registered(kind)
    options = dict(spec)
    type_name = options.pop("type")
    if type_name not in classes:
        raise ConfigError(f"unknown {kind} type {type_name!r}; known: {', '.join(sorted(classes))}")
    config = validate_config(classes[type_name], options)  # named errors before heavy work
    key = ""
    if kind in _SHARED_KINDS:
        # Keyed on the validated config, so specs that differ only by spelled-out defaults share.
        key = f"{kind}:{type_name}:" + json.dumps(config.model_dump(mode="json"), sort_keys=True)
        if key in _SHARED:
            return _SHARED[key]
    component = classes[type_name](**options)
    if key:
        _SHARED[key] = component
    return component
