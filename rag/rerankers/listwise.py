"""Listwise LLM reranking: the model sees a window of passages at once and orders them.

Both methods slide a window from the bottom of the list to the top (RankGPT's sliding windows),
so a relevant passage found low in the list can move up one window per step:

- RankGPT: passages labelled [1]..[n]; the model writes a permutation "[2] > [1] > ...", parsed
  robustly (duplicates and out-of-range labels dropped, missing ones appended in order).
- FIRST: passages labelled A..T; the order is read from the logits of the label tokens at the
  first output position, one forward pass per window and no decoding.

Windows of all queries in a batch are scored together, one round of windows at a time.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from pydantic import Field, model_validator

from rag.generators.base import Generator
from rag.registry import ComponentConfig, register
from rag.rerankers.base import Reranker, passage_text, rescored
from rag.types import Hit, Prompt, SamplingParams

Span = tuple[int, int]


def windows(n: int, window: int, step: int) -> list[Span]:
    """Window spans from the back of an n-long list to its front, as RankGPT slides them.

    RankGPT stops once a window would start above the top; a last window at the top is added
    here when the steps skip past it, so every position is ranked at least once.
    """
    if n <= window:
        return [(0, n)] if n else []
    spans: list[Span] = []
    end, start = n, n - window
    while start >= 0:
        spans.append((start, end))
        end, start = end - step, start - step
    if spans[-1][0] > 0:
        spans.append((0, window))
    return spans


def parse_permutation(text: str, n: int) -> list[int]:
    """0-based order from a reply like "[3] > [1] > [2]"; never fails on garbage."""
    seen: list[int] = []
    for match in re.findall(r"\d+", text):
        index = int(match) - 1
        if 0 <= index < n and index not in seen:
            seen.append(index)
    return seen + [i for i in range(n) if i not in seen]


class ListwiseConfig(ComponentConfig):
    generator: dict[str, Any]
    window: int = Field(default=20, ge=2)
    step: int = Field(default=10, ge=1)
    max_words: int = Field(default=60, ge=1, description="passage words shown per passage")

    @model_validator(mode="after")
    def _step_fits(self) -> ListwiseConfig:
        if self.step > self.window:
            raise ValueError(f"step {self.step} is larger than window {self.window}: passages would be skipped")
        return self


class ListwiseReranker(Reranker):
    """Sliding-window reranking; subclasses order one batch of windows."""

    nested = {"generator": "generator"}
    Config = ListwiseConfig
    config: ListwiseConfig
    generator: Generator

    def order(self, queries: Sequence[str], windows: Sequence[Sequence[Hit]]) -> list[list[int]]:
        """For each window, its 0-based indices from most to least relevant."""
        raise NotImplementedError

    def rerank(self, queries: Sequence[str], hits: Sequence[Sequence[Hit]]) -> list[list[Hit]]:
        self.check(queries, hits)
        lists = [list(hs) for hs in hits]
        plans = [windows(len(hs), self.config.window, self.config.step) for hs in lists]
        for turn in range(max((len(p) for p in plans), default=0)):
            jobs = [(i, plan[turn]) for i, plan in enumerate(plans) if turn < len(plan)]
            orders = self.order(
                [queries[i] for i, _ in jobs], [lists[i][a:b] for i, (a, b) in jobs]
            )
            for (i, (a, b)), order in zip(jobs, orders, strict=True):
                lists[i][a:b] = [lists[i][a + j] for j in order]
        return [rescored(hs, [float(len(hs) - r) for r in range(len(hs))], self.name) for hs in lists]


RANKGPT_PROMPT = (
    "I will give you {n} passages, each with an identifier in brackets. Rank them by their "
    "relevance to the search query.\n\n{passages}\n\nSearch query: {query}\n\n"
    "List the {n} identifiers from most to least relevant, in the format [] > [], "
    "e.g. [2] > [1]. Answer with the ranking only."
)


@register("reranker", "rankgpt")
class RankGPTReranker(ListwiseReranker):
    """RankGPT permutation generation, greedy decoding."""

    def prompt(self, query: str, window: Sequence[Hit]) -> Prompt:
        passages = "\n".join(
            f"[{i + 1}] {passage_text(h, self.config.max_words)}" for i, h in enumerate(window)
        )
        system = "You are RankGPT, an assistant that ranks passages by their relevance to a query."
        return Prompt.chat(RANKGPT_PROMPT.format(n=len(window), passages=passages, query=query), system)

    def order(self, queries: Sequence[str], windows: Sequence[Sequence[Hit]]) -> list[list[int]]:
        longest = max(len(w) for w in windows)
        params = SamplingParams(max_tokens=6 * longest + 8, temperature=0.0)
        prompts = [self.prompt(q, w) for q, w in zip(queries, windows)]
        replies = self.generator.generate(prompts, params)
        return [parse_permutation(r.text, len(w)) for r, w in zip(replies, windows)]


FIRST_LABELS = string.ascii_uppercase[:20]
FIRST_PROMPT = (
    "I will give you {n} passages, each labelled with a letter. Rank them by their relevance to "
    "the search query.\n\n{passages}\n\nSearch query: {query}\n\n"
    "List the letters from most to least relevant, like {example}. Answer with the ranking only."
)


@register("reranker", "first")
class FirstReranker(ListwiseReranker):
    """FIRST: order a window by its label tokens' logits at the first output position."""

    class Config(ListwiseConfig):
        window: int = Field(default=20, ge=2, le=len(FIRST_LABELS), description="one label each")

    config: Config

    def prompt(self, query: str, window: Sequence[Hit]) -> Prompt:
        passages = "\n".join(
            f"[{FIRST_LABELS[i]}] {passage_text(h, self.config.max_words)}" for i, h in enumerate(window)
        )
        example = " > ".join(FIRST_LABELS[: min(3, len(window))][::-1])
        return Prompt.chat(
            FIRST_PROMPT.format(n=len(window), passages=passages, query=query, example=example)
        )

    def order(self, queries: Sequence[str], windows: Sequence[Sequence[Hit]]) -> list[list[int]]:
        longest = max(len(w) for w in windows)
        prompts = [self.prompt(q, w) for q, w in zip(queries, windows)]
        logprobs = self.generator.next_token_logprobs(prompts, list(FIRST_LABELS[:longest]))
        return [
            sorted(range(len(w)), key=lambda j, row=row: -row[j]) for row, w in zip(logprobs, windows)
        ]
