"""Pointwise LLM relevance: P("Yes") against P("No") as the next token, per query and passage.

This is monoT5's scoring (softmax over the true/false logits at one position) done with a
decoder LLM's chat model: score = e^{z_yes} / (e^{z_yes} + e^{z_no}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from rag.generators.base import Generator, yes_probability
from rag.registry import ComponentConfig, register
from rag.rerankers.base import Reranker, passage_text, rescored
from rag.types import Hit, Prompt

QUESTION = (
    "Passage: {passage}\n\nQuery: {query}\n\n"
    "Does the passage answer the query? Answer Yes or No."
)


@register("reranker", "llm-pointwise")
class PointwiseReranker(Reranker):
    """One yes/no judgement per (query, passage), all scored in one batched call."""

    nested = {"generator": "generator"}

    class Config(ComponentConfig):
        generator: dict[str, Any]
        max_words: int = Field(default=100, ge=1, description="passage words shown to the LLM")
        labels: tuple[str, str] = Field(default=("Yes", "No"), description="the yes and no answers")

    config: Config
    generator: Generator

    def prompt(self, query: str, hit: Hit) -> Prompt:
        return Prompt.chat(QUESTION.format(passage=passage_text(hit, self.config.max_words), query=query))

    def rerank(self, queries: Sequence[str], hits: Sequence[Sequence[Hit]]) -> list[list[Hit]]:
        self.check(queries, hits)
        prompts = [self.prompt(q, h) for q, hs in zip(queries, hits) for h in hs]
        relevance = yes_probability(self.generator, prompts, self.config.labels)
        out, start = [], 0
        for hs in hits:
            out.append(rescored(hs, relevance[start : start + len(hs)], self.name))
            start += len(hs)
        return out
