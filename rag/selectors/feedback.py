"""LLM feedback: how much a candidate demonstration helps the LLM produce an anchor's output.

The score of candidate e for anchor (x, y), after already-chosen demonstrations c1..cm, is
log P(y | c1..cm, e, x) under the `DemoTemplate`, summed (EPR, LAIL) or averaged per token
(LLM-R) over y's tokens, computed through the generator's `score`. Scoring is the expensive
part of training (one LLM pass per anchor and candidate), so scores are appended to a JSONL
cache as they are computed: an interrupted run resumes where it stopped, and a rerun with
other training settings costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from rag.errors import RagError
from rag.generators.base import Generator
from rag.selectors.base import regroup
from rag.selectors.prompt import DemoTemplate
from rag.types import Demo

Reduction = Literal["sum", "mean"]


class ScoreCache:
    """Append-only JSONL of {key, logprobs}; a torn last line (killed mid-write) is ignored.

    Per-token log-probabilities are kept, not a reduced score, so methods that reduce
    differently (EPR's sum, LLM-R's mean) share one cache.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.logprobs: dict[str, list[float]] = {}
        if self.path and self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, 1):
                try:
                    record = json.loads(line)
                    self.logprobs[record["key"]] = [float(x) for x in record["logprobs"]]
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    if number < len(lines):  # only the last line may be torn
                        raise RagError(f"{self.path}:{number}: not a score record") from None

    def add(self, items: dict[str, list[float]]) -> None:
        self.logprobs.update(items)
        if self.path is None or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"key": k, "logprobs": v}) + "\n" for k, v in items.items())
            fh.flush()
            os.fsync(fh.fileno())


class FeedbackScorer:
    """Scores (anchor, context, candidate) triples with one LLM, cached by their identity."""

    def __init__(
        self,
        generator: Generator,
        template: DemoTemplate,
        reduction: Reduction = "sum",
        cache: str | Path | None = None,
        chunk: int = 256,
    ) -> None:
        self.generator, self.template, self.reduction = generator, template, reduction
        self.cache = ScoreCache(cache)
        self.chunk = chunk
        self._identity = json.dumps([generator.spec(), template.model_dump()], sort_keys=True)

    def _key(self, anchor: Demo, context: Sequence[Demo], candidate: Demo) -> str:
        parts = [self._identity, anchor.id, anchor.input, anchor.output, candidate.id,
                 candidate.input, candidate.output, *(f"{c.id}\x00{c.input}" for c in context)]
        return hashlib.sha256("\x01".join(parts).encode()).hexdigest()

    def prompt(self, anchor: Demo, context: Sequence[Demo], candidate: Demo) -> str:
        """Context first, the candidate next to the anchor's input (Se²'s [c1..cm; e; x])."""
        return self.template.plain([*context, candidate], anchor.input)

    def score(
        self,
        anchors: Sequence[Demo],
        candidates: Sequence[Sequence[Demo]],
        contexts: Sequence[Sequence[Demo]] | None = None,
        progress: bool = False,
    ) -> list[list[float]]:
        """For each anchor, the score of each of its candidates (after its context, if any)."""
        contexts = contexts or [[] for _ in anchors]
        if not len(anchors) == len(candidates) == len(contexts):
            raise RagError("score() needs one candidate list (and context) per anchor")
        triples = [(a, ctx, c) for a, cands, ctx in zip(anchors, candidates, contexts) for c in cands]
        keys = [self._key(*t) for t in triples]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # score each triple once
        todo = sorted(i for k, i in first.items() if k not in self.cache.logprobs)
        with tqdm(total=len(todo), desc="LLM feedback", disable=not progress) as bar:
            for start in range(0, len(todo), self.chunk):
                batch = todo[start : start + self.chunk]
                logprobs = self.generator.score(
                    [self.prompt(*triples[i]) for i in batch],
                    [self.template.answer(triples[i][0].output) for i in batch],
                )
                self.cache.add({keys[i]: lp for i, lp in zip(batch, logprobs)})
                bar.update(len(batch))
        return regroup([self._reduce(self.cache.logprobs[k]) for k in keys], candidates)

    def _reduce(self, logprobs: list[float]) -> float:
        return sum(logprobs) / len(logprobs) if self.reduction == "mean" else sum(logprobs)
