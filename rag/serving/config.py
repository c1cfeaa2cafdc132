"""The server's configuration file: which pipelines, models and encoders to serve, and limits.

    pipelines: {rag: pipelines/naive_rag.yaml}        # a pipeline file, or an inline spec
    models: {tiny: {type: vllm, model: tiny}}          # raw generators, served as models too
    embeddings: {minilm: {type: sentence_transformers}}
    api_keys: []                                       # or the RAG_API_KEYS variable, comma-separated
    max_in_flight: 64
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rag.errors import ConfigError


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipelines: dict[str, str | dict[str, Any]] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    embeddings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    api_keys: list[str] = Field(default_factory=list)
    max_in_flight: int = Field(default=64, ge=1, description="requests at once; more get 429")
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    allow_unauthenticated_public: bool = Field(
        default=False, description="bind beyond 127.0.0.1 without API keys"
    )

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        names = [*self.pipelines, *self.models, *self.embeddings]
        if not names:
            raise ValueError("serve at least one pipeline, model or embedding model")
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be distinct across pipelines, models, embeddings: {names}")
        if any(not k for k in self.api_keys):
            raise ValueError("api_keys must not be empty strings")
        return self

    def keys(self) -> list[str]:
        env = [k for k in os.environ.get("RAG_API_KEYS", "").split(",") if k]
        return [*self.api_keys, *env]

    def check_binding(self) -> None:
        """Without keys, only loopback unless explicitly allowed."""
        if not self.keys() and self.host not in {"127.0.0.1", "localhost", "::1"} and \
                not self.allow_unauthenticated_public:
            raise ConfigError(
                f"refusing to serve on {self.host} without API keys: set api_keys (or RAG_API_KEYS) "
                "or allow_unauthenticated_public: true"
            )

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> ServeConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read server config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data.update({k: v for k, v in overrides.items() if v is not None})
        for name, spec in data.get("pipelines", {}).items():
            if isinstance(spec, str) and not Path(spec).is_absolute():
                data["pipelines"][name] = str(path.parent / spec)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"{path}: {problems}") from None
