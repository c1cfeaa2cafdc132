"""OpenAI API request bodies, strictly validated: an unknown or unsupported field is a 400.

Only the fields rag-icl honours are accepted, so a client never believes a parameter took effect
when it did not.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP = 4


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class Sampling(Strict):
    """Sampling fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOP} non-empty strings")
        return stops


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user" or not messages[-1].content.strip():
            raise ValueError("the last message must be a non-empty user message")
        return messages


class CompletionRequest(Sampling):
    prompt: str | list[str]
    echo: Literal[False] = False

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, prompt: str | list[str]) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not prompts or any(not p.strip() for p in prompts) or len(prompts) > 64:
            raise ValueError("prompt must be 1 to 64 non-empty strings")
        return prompts


class EmbeddingRequest(Strict):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or any(not t.strip() for t in texts) or len(texts) > 2048:
            raise ValueError("input must be 1 to 2048 non-empty strings")
        return texts
