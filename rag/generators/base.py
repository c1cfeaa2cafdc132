"""The generator interface every backend implements, and the tokenization they share.

`generate` samples completions; `score` returns the log-probability of each token of a given
continuation after a prompt, which learned selectors, LLM rerankers and verifiers are built on.
Local backends (vLLM, transformers) tokenize the same way, through `LocalGenerator.prompt_ids`, so
their scores are comparable token by token.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from rag.dtypes import DTYPE_HELP, DtypeChoice
from rag.errors import KVTransferError, RagError
from rag.registry import Component, ComponentConfig
from rag.types import Generation, Prompt, SamplingParams, TextDelta

PromptLike = Prompt | str


def as_prompt(prompt: PromptLike) -> Prompt:
    return prompt if isinstance(prompt, Prompt) else Prompt(text=prompt)


def check_batch(prompts: Sequence[Any], continuations: Sequence[str] | None = None) -> None:
    if continuations is not None and len(prompts) != len(continuations):
        raise RagError(
            f"score() needs one continuation per prompt: {len(prompts)} prompts, "
            f"{len(continuations)} continuations"
        )
    if continuations is not None and any(not c for c in continuations):
        raise RagError("score() needs non-empty continuations")


def check_options(options: Sequence[str]) -> None:
    if not options or any(not o for o in options):
        raise RagError("next_token_logprobs() needs at least one option, none of them empty")


def yes_probability(
    generator: Generator, prompts: Sequence[PromptLike], labels: Sequence[str] = ("Yes", "No")
) -> list[float]:
    """P(yes) renormalized over {yes, no} at the next token: a logistic of the log-odds."""
    pairs = generator.next_token_logprobs(prompts, list(labels)) if prompts else []
    return [1.0 / (1.0 + math.exp(no - yes)) for yes, no in pairs]


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Generator(Component):
    """Base of all generators: one interface for sampling and for scoring."""

    kind = "generator"
    # Whether `generate_ids` loads precomputed KV caches inside the engine: what stages that
    # answer from caches ask, instead of which class the generator is.
    loads_kv: ClassVar[bool] = False

    @property
    def dtype(self) -> str | None:
        """The precision the model runs in (`auto` resolved), for traces; None where unknown."""
        return None

    def generate(
        self, prompts: Sequence[PromptLike], params: SamplingParams | None = None
    ) -> list[Generation]:
        raise NotImplementedError

    def score(self, prompts: Sequence[PromptLike], continuations: Sequence[str]) -> list[list[float]]:
        """Per-token log-probabilities of each continuation given its prompt."""
        raise NotImplementedError

    def generate_ids(
        self, prompts: Sequence[list[int]], params: SamplingParams | None = None,
        transfers: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[Generation]:
        """`generate` for token-id prompts, each optionally loading precomputed KV caches
        (`transfers`: `rag.kvcache.connector.transfer_params`); only where `loads_kv`."""
        raise KVTransferError(
            f"the {self.name!r} generator cannot take precomputed KV (generate_ids with "
            "transfers): use a vllm generator with kv_connector: true, or the transformers "
            "generator, whose caches the kv stages load by hand")

    async def agenerate(
        self, prompts: Sequence[PromptLike], params: SamplingParams | None = None
    ) -> list[Generation]:
        """`generate` for async callers; backends without an async engine run it in a thread."""
        return await asyncio.to_thread(self.generate, prompts, params)

    async def stream(
        self, prompt: PromptLike, params: SamplingParams | None = None
    ) -> AsyncIterator[TextDelta]:
        """The completion as it is produced; by default all at once, when it is done."""
        (generation,) = await self.agenerate([prompt], params)
        first = generation.completions[0]
        yield TextDelta(text=first.text, finish_reason=first.finish_reason, usage=generation.usage)

    def next_token_logprobs(
        self, prompts: Sequence[PromptLike], options: Sequence[str]
    ) -> list[list[float]]:
        """Log-probability that the next token is the first token of each option, per prompt.

        Label scoring (yes/no relevance, single-token listwise ranking) needs this. The default
        scores each option separately; local backends override it with one forward pass.
        """
        check_options(options)
        pairs = [(p, o) for p in prompts for o in options]
        scores = self.score([p for p, _ in pairs], [o for _, o in pairs])
        flat = [s[0] for s in scores]
        return [flat[i : i + len(options)] for i in range(0, len(flat), len(options))]

    @property
    def model_name(self) -> str:
        return str(getattr(self.config, "model", self.name))


class LocalModelConfig(ComponentConfig):
    """What every in-process backend needs: which model, at which precision."""

    model: str = "tiny"
    dtype: DtypeChoice = Field(default="auto", description=DTYPE_HELP)


class LocalGenerator(Generator):
    """A generator whose tokenizer is local: renders chat templates and counts tokens itself."""

    _tokenizer: Any = None

    @cached_property
    def model_path(self) -> Path:
        from rag.models import resolve_model

        return resolve_model(self.config.model)  # type: ignore[attr-defined]

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    def render(self, prompt: PromptLike) -> str:
        """The exact text the model reads: the chat template applied, or the raw text."""
        prompt = as_prompt(prompt)
        if prompt.text is not None:
            return prompt.text
        messages = [m.model_dump() for m in prompt.messages or []]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def prompt_ids(self, prompt: PromptLike) -> list[int]:
        prompt = as_prompt(prompt)
        # A rendered chat template already holds its special tokens; raw text gets the model's.
        return self.tokenizer.encode(self.render(prompt), add_special_tokens=prompt.text is not None)

    def continuation_ids(self, continuation: str) -> list[int]:
        return self.tokenizer.encode(continuation, add_special_tokens=False)

    def option_ids(self, options: Sequence[str]) -> list[int]:
        """The first token of each option, which must differ between options."""
        check_options(options)
        ids = [self.continuation_ids(o)[0] for o in options]
        if len(set(ids)) != len(ids):
            raise RagError(f"options {list(options)} share a first token; pick distinct labels")
        return ids
