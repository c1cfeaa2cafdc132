"""OpenAI API request bodies, strictly validated: an unknown or unsupported field is a 400.

Only the fields rag-icl honours are accepted, so a client never believes a parameter took effect
when it did not. Text that no tokenizer should see (NUL characters, unpaired surrogates) and
message parts no served model reads (images, audio, tool results) are refused by name here, before
they reach a model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from rag.types import RetrievalOverride, Role, SamplingOverride

MAX_STOP = 4
# The request fields that set decoding, as clients name them; `max_completion_tokens` is chat's
# newer name for `max_tokens`.
SAMPLING_FIELDS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop",
                   "seed")
INT64 = 2**63  # vLLM seeds a 64-bit generator


def _readable(text: str) -> str:
    """Text as a tokenizer can take it: a NUL or an unpaired surrogate fails deep in a model."""
    if "\x00" in text:
        raise ValueError("holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (it holds an unpaired surrogate)") from None
    return text


def _filled(text: str) -> str:
    if not text.strip():
        raise ValueError("is empty")
    return text


FilledText = Annotated[str, AfterValidator(_readable), AfterValidator(_filled)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(Strict):
    role: Role
    content: FilledText
    name: str | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _no_tools(cls, role: Any) -> Any:
        if role in ("tool", "function"):
            raise ValueError(f"{role!r} messages are not taken: the served models call no tools")
        return role

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, content: Any) -> Any:
        """OpenAI content parts, joined when every one is text; any other part is refused."""
        if not isinstance(content, list):
            return content
        texts = []
        for i, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text":
                raise ValueError(f"part {i} is {kind!r}: only text parts are read (the served "
                                 "models take no images, audio or files)")
            if not isinstance(part.get("text"), str):
                raise ValueError(f"text part {i} has no 'text' string")
            texts.append(part["text"])
        return "\n".join(texts)


class Sampling(Strict):
    """Sampling fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-INT64, lt=INT64)
    stream: bool = False
    user: str | None = None
    # Not OpenAI's: a pipeline's retrieval for this request (`extra_body={"filter": ..., "k": 5}`)
    filter: dict[str, Any] | None = None
    k: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOP} non-empty strings")
        return [_readable(s) for s in stops]

    def asked(self) -> list[str]:
        """The sampling fields this request sets (to a value: a null or empty one sets none)."""
        return [f for f in SAMPLING_FIELDS if getattr(self, f, None) not in (None, [])
                and f in self.model_fields_set]

    def retrieval(self) -> RetrievalOverride | None:
        """The request's own filter and k, for a pipeline's retrieve stages (None: as configured)."""
        if self.filter is None and self.k is None:
            return None
        return RetrievalOverride(k=self.k, filter=self.filter)

    def retrieval_field(self) -> str:
        """The retrieval field this request sets, to name in an error."""
        return "filter" if self.filter is not None else "k"

    def override(self) -> SamplingOverride:
        """The fields it sets, for a pipeline's generation to lay over its own params."""
        values = {f: getattr(self, f) for f in self.asked()}
        if "max_completion_tokens" in values:
            values["max_tokens"] = values.pop("max_completion_tokens")
        return SamplingOverride(**values)


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must be a user message")
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
        return [_readable(p) for p in prompts]


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
        return [_readable(t) for t in texts]
