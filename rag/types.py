"""Typed values that flow through a pipeline.

Plain pydantic models with no behaviour beyond validation, so that every stage, the server and the
evaluation harness agree on one vocabulary. This module imports nothing from the rest of `rag`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["system", "user", "assistant"]


class Document(BaseModel):
    """A source text as it was read from a corpus."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class Chunk(BaseModel):
    """A span of one document: `document.text[start:end] == text`."""

    id: str
    doc_id: str
    text: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _span_is_ordered(self) -> Chunk:
        if self.end < self.start:
            raise ValueError(f"chunk {self.id!r}: end {self.end} is before start {self.start}")
        return self


class Hit(BaseModel):
    """A chunk returned by a retriever or reranker, with the score that ranked it."""

    chunk: Chunk
    score: float
    retriever: str
    scores: dict[str, float] = Field(
        default_factory=dict, description="Earlier scores of this hit, by the stage that gave them."
    )


class Demo(BaseModel):
    """An in-context demonstration: an input and its gold output."""

    id: str
    input: str
    output: str
    score: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    role: Role
    content: str


class Prompt(BaseModel):
    """What a generator reads: chat messages (rendered with the model's template) or raw text."""

    messages: list[Message] | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Prompt:
        if (self.messages is None) == (self.text is None):
            raise ValueError("a Prompt holds either `messages` or `text`, not both or neither")
        if self.messages is not None and not self.messages:
            raise ValueError("a Prompt's `messages` must not be empty")
        return self

    @classmethod
    def chat(cls, user: str, system: str | None = None) -> Prompt:
        messages = [Message(role="system", content=system)] if system else []
        messages.append(Message(role="user", content=user))
        return cls(messages=messages)


class SamplingParams(BaseModel):
    """Decoding settings shared by every generator backend."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


class SamplingOverride(BaseModel):
    """One request's own decoding settings: the fields it sets replace a stage's configured
    `SamplingParams`, the others (None) leave them as configured."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    seed: int | None = None


class RetrievalOverride(BaseModel):
    """One request's own retrieval settings: a metadata filter (the grammar of docs/filters.md)
    and k replace a retrieve stage's configured ones; None leaves them as configured."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(default=None, ge=1, le=1000)
    filter: dict[str, Any] | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = Field(
        default=0, description="Prompt tokens whose KV came from a cache (vLLM prefix cache, KV store)."
    )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
        )


class Completion(BaseModel):
    """One sampled continuation."""

    text: str
    token_ids: list[int] = Field(default_factory=list)
    logprob: float | None = Field(default=None, description="Sum of the sampled tokens' log-probs.")
    finish_reason: str | None = None


class Generation(BaseModel):
    """All completions for one prompt, with the prompt's token count."""

    completions: list[Completion]
    usage: Usage

    @property
    def text(self) -> str:
        return self.completions[0].text


class TextDelta(BaseModel):
    """A piece of a streamed completion; the last one carries the finish reason."""

    text: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage, description="Tokens so far.")


class Citation(BaseModel):
    """A passage an answer refers to, by its number in the prompt."""

    number: int
    chunk_id: str
    doc_id: str
    title: str = ""
    source: str = Field(default="", description="The file it came from, relative to the folder.")
    page: int | None = Field(default=None, description="The PDF page its passage starts on.")
    inferred: bool = Field(
        default=False, description="True when found by word overlap, not cited by the model."
    )

    @classmethod
    def of(cls, number: int, chunk: Chunk) -> Citation:
        """Passage `number` of a prompt, showing `chunk`."""
        return cls(number=number, chunk_id=chunk.id, doc_id=chunk.doc_id, title=chunk.title,
                   source=chunk.metadata.get("source", ""), page=chunk.metadata.get("page"))

    @property
    def label(self) -> str:
        """How a reader finds it: `manual.pdf p. 4` for a file, else its title or document id."""
        where = self.source or self.title or self.doc_id
        return where if self.page is None else f"{where} p. {self.page}"


class StageTrace(BaseModel):
    """What one stage did for one query: wall time of its batch and the sizes it wrote."""

    stage: str
    seconds: float
    batch_size: int
    sizes: dict[str, int] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)


class Answer(BaseModel):
    """The result of a pipeline run for one query."""

    query: str
    text: str
    citations: list[Citation] = Field(default_factory=list)
    sources: list[Citation] = Field(
        default_factory=list, description="Every passage the prompt showed, cited or not."
    )
    usage: Usage = Field(default_factory=Usage)
    supported: bool | None = Field(
        default=None, description="Grounding verdict: do the sources support it? None: not checked."
    )
    agreement: float | None = Field(
        default=None, description="Share of sampled answers that agree with it (self-consistency)."
    )
    trace: list[StageTrace] = Field(default_factory=list)


class KnownItem(BaseModel):
    """A known-item query: find the one document `gold` (its `doc_id`) that `query` describes."""

    query: str
    gold: str
