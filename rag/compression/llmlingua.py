"""Perplexity-based pruning, question-aware (LongLLMLingua) with a small causal LM.

Coarse: each passage is ranked by how well it predicts the question,
r_k = mean log p(question + " We can get the answer to this question in the given documents." | passage_k),
and passages are kept in that order (most relevant first) until `coarse_keep` x the budget.
Fine: every token of a kept passage is ranked by LongLLMLingua's contrastive perplexity, how
much the question makes it likelier: -log p(x_i | x_<i) - (-log p(x_i | question, x_<i)) (what
llmlingua's `condition_compare=True` ranks by; the default, chosen on two dev splits), or with
`contrastive=False` by its self-information -log p(x_i | question, x_<i); the lowest-scored
tokens are dropped until the passage meets its share of the budget. The shares follow the
coarse rank (LongLLMLingua's dynamic ratio): the best passage is compressed least, spread over
+/- `rank_spread`.

Simplified to fit a CPU: token scores are computed once per passage on the original text,
not re-conditioned on the already-compressed prefix segment by segment as LLMLingua's iterative
compression does.

With an empty question (`compress_passages`, index time) this is LLMLingua's own, question-free
token pruning: no coarse ranking, self-information -log p(x_i | x_<i) of the passage alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from rag.compression.base import Compressed, Compressor, CompressorConfig, with_text
from rag.generators.base import LocalGenerator
from rag.registry import register
from rag.types import Hit

QUESTION_SUFFIX = " We can get the answer to this question in the given documents."


@register("compressor", "llmlingua")
class LLMLinguaCompressor(Compressor):
    nested = {"generator": "generator"}

    class Config(CompressorConfig):
        generator: dict[str, Any] = Field(default_factory=lambda: {"type": "vllm", "model": "tiny"})
        coarse_keep: float = Field(default=1.5, ge=1.0, description="coarse step keeps this x budget")
        rank_spread: float = Field(default=0.3, ge=0.0, lt=1.0, description="dynamic ratio spread")
        contrastive: bool = Field(default=True, description=(
            "rank tokens by contrastive perplexity (LongLLMLingua; chosen on two dev splits, "
            "benchmarks/compression.py --part ranking), not self-information"))

    config: Config
    generator: LocalGenerator

    @property
    def tokenizer(self) -> Any:  # count tokens as the LM sees them
        return self.generator.tokenizer

    def compress(self, queries: Sequence[str], hits: Sequence[Sequence[Hit]]) -> list[Compressed]:
        pairs = [(q, h) for q, hs in zip(queries, hits) for h in hs if q]
        relevance = self.generator.score([h.chunk.text + "\n\n" for _, h in pairs],
                                         [q + QUESTION_SUFFIX for q, _ in pairs]) if pairs else []
        mean = [sum(r) / len(r) for r in relevance]
        plans, start = [], 0
        for q, hs in zip(queries, hits):
            order = sorted(range(len(hs)), key=lambda i: -mean[start + i]) if q else range(len(hs))
            start += len(hs) if q else 0
            original, budget = self.budget(hs)
            kept, used = [], 0
            for i in order:
                if kept and used >= self.config.coarse_keep * budget:
                    break
                kept.append(i)
                used += self.count(hs[i].chunk.text)
            plans.append((q, hs, kept, original, budget))
        # Fine step: one scoring call for every kept passage of the batch.
        jobs = [(q, hs[i]) for q, hs, kept, _, _ in plans for i in kept]
        info = self.importance(jobs)
        out, cursor = [], 0
        for q, hs, kept, original, budget in plans:
            lengths = [len(info[cursor + r]) for r in range(len(kept))]
            shares = self._shares(lengths, budget)
            new = []
            for r, i in enumerate(kept):
                text = self._prune(hs[i].chunk.text, info[cursor + r], shares[r])
                if text.strip():
                    new.append(with_text(hs[i], text))
            cursor += len(kept)
            out.append(Compressed(hits=new, original_tokens=original,
                                  kept_tokens=sum(self.count(h.chunk.text) for h in new)))
        return out

    def importance(self, jobs: Sequence[tuple[str, Hit]]) -> list[list[float]]:
        """Per token of each job's passage, higher = keep: self-information given the question,
        or (`contrastive`, with a question) the log-probability the question adds."""
        if not jobs:
            return []
        texts = [h.chunk.text for _, h in jobs]
        given = self.generator.score([f"Question: {q}\n\n" if q else "\n\n" for q, _ in jobs],
                                     texts)
        out = [[-lp for lp in row] for row in given]
        asked = [j for j, (q, _) in enumerate(jobs) if q] if self.config.contrastive else []
        alone = self.generator.score(["\n\n"] * len(asked), [texts[j] for j in asked]) if asked else []
        for j, base in zip(asked, alone):
            out[j] = [c - a for c, a in zip(given[j], base)]
        return out

    def _shares(self, lengths: list[int], budget: int) -> list[int]:
        """Budget per kept passage: proportional to its length, weighted by rank (1 + s .. 1 - s)."""
        n, spread = len(lengths), self.config.rank_spread
        weights = [(1 + spread - 2 * spread * r / (n - 1)) if n > 1 else 1.0 for r in range(n)]
        total = sum(w * length for w, length in zip(weights, lengths)) or 1
        return [min(length, round(budget * w * length / total)) for w, length in zip(weights, lengths)]

    def _prune(self, text: str, importance: list[float], keep: int) -> str:
        """Keep the `keep` most important tokens, in their order."""
        ids = self.generator.continuation_ids(text)
        if keep >= len(ids):
            return text
        ranked = sorted(range(len(ids)), key=lambda t: -importance[t])
        chosen = sorted(ranked[:keep])
        return self.generator.tokenizer.decode([ids[t] for t in chosen])
