"""Selectors trained from LLM feedback: EPR, LLM-R, LAIL and Se², on one training loop.

All four start the same way: for each training anchor (x, y), mine candidate demonstrations
from the pool with BM25 (the anchor itself excluded) and let the LLM score each one (see
`feedback`). They differ in what they learn from those scores:
- EPR (Rubin et al. 2022): log P(y | e, x) summed over y's tokens; InfoNCE with one hard
  negative per anchor plus in-batch negatives.
- LAIL (Li et al.): EPR's recipe on code tasks, the score being the probability of the
  ground-truth program given (example, requirement); pass a code template.
- LLM-R (Wang et al. 2023): mean per-token log-probability; a cross-encoder reward model is
  trained on the scores and distilled into the bi-encoder with KL + 0.2·InfoNCE (τ = 0.01,
  groups of 4); further iterations mine candidates with the retriever just trained.
- Se² (Liu et al. 2024): scores are taken in context of the demonstrations already chosen
  ([c1..cm; e; x]), greedily one step at a time; the query side encodes x with the chosen
  examples, and inference is a beam search over sequences.
A trained selector is a `knn` (or `se2`) selector whose encoder is the fine-tuned model; its
spec is saved as `selector.json` next to the model and loads with `load_selector`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from rag.errors import RagError
from rag.generators.base import Generator
from rag.registry import build, register
from rag.selectors.base import Selector
from rag.selectors.feedback import FeedbackScorer
from rag.selectors.prompt import DemoTemplate
from rag.selectors.reward import RewardSettings, reward_scores, train_reward_model
from rag.selectors.training import Group, TrainReport, TrainSettings, train_biencoder
from rag.selectors.unsupervised import BM25Selector, KNNSelector
from rag.storage import atomic_write_json, load_json
from rag.types import Demo

Method = Literal["epr", "llm-r", "lail", "se2"]
SPEC = "selector.json"


def sequence_query(text: str, chosen: Sequence[Demo]) -> str:
    """Se²'s query side: the input, then the examples chosen so far, latest first (so that a
    long sequence loses its oldest examples to the encoder's truncation)."""
    return "\n".join([text, *(f"{d.input} {d.output}" for d in reversed(chosen))])


@register("selector", "se2")
class Se2Selector(KNNSelector):
    """Beam search over demonstration sequences with a sequence-aware encoder (Se²).

    Each step encodes every beam's (input + chosen examples) and extends it with its nearest
    unchosen demonstrations; a beam's score is the running sum of inner products. Returns the
    best sequence in the order chosen, which is also its prompt order (use `order: as_given`).
    """

    class Config(KNNSelector.Config):
        beam: int = Field(default=3, ge=1)

    config: Config

    def select(self, queries: Sequence[str], k: int) -> list[list[Demo]]:
        allowed = self._allowed(queries, k)
        beams: list[list[tuple[list[int], float]]] = [[([], 0.0)] for _ in queries]
        for _ in range(k):
            flat = [(q, seq, total) for q, qb in enumerate(beams) for seq, total in qb]
            texts = [sequence_query(queries[q], [self.pool[i] for i in seq]) for q, seq, _ in flat]
            scores = self.encoder.encode_queries(texts) @ self.vectors.T
            grown: list[list[tuple[list[int], float]]] = [[] for _ in queries]
            for (q, seq, total), row in zip(flat, scores):
                mask = allowed[q].copy()
                mask[seq] = False
                for i in self._pick(row, mask, min(self.config.beam, int(mask.sum()))):
                    grown[q].append(([*seq, i], total + float(row[i])))
            beams = [sorted(g, key=lambda b: -b[1])[: self.config.beam] for g in grown]
        return [[self.pool[i].model_copy(update={"score": total}) for i in best[0][0]]
                for best in beams]


class TrainedSelector(BaseModel):
    method: str
    spec: dict[str, Any]
    report: TrainReport
    anchors: int
    candidates: int
    llm_scored: int = Field(description="LLM scoring passes (anchor, context, candidate)")
    scoring_seconds: float
    training_seconds: float


def load_selector(path: str | Path) -> Selector:
    """A trained selector from its folder (or its selector.json)."""
    path = Path(path)
    return build("selector", load_json(path / SPEC if path.is_dir() else path, "selector spec"))


def mine_candidates(
    retriever: Selector, pool: Sequence[Demo], anchors: Sequence[Demo], n: int
) -> list[list[Demo]]:
    """The n best candidates for each anchor (never the anchor itself) from a fitted selector."""
    if n > len(pool) - 1:
        raise RagError(f"{n} candidates per anchor asked for from a pool of {len(pool)}")
    return [[d for d in found if d.id != a.id][:n] for a, found in
            zip(anchors, retriever.select([a.input for a in anchors], n + 1))]


def _settings(method: Method, overrides: dict[str, Any]) -> TrainSettings:
    paper = {"llm-r": {"group_size": 4, "temperature": 0.01, "infonce_weight": 0.2,
                       "kl_weight": 1.0}}.get(method, {})
    return TrainSettings(**{**paper, **overrides})


def train_selector(
    method: Method,
    pool: Sequence[Demo],
    anchors: Sequence[Demo],
    generator: Generator,
    out: str | Path,
    template: DemoTemplate | None = None,
    candidates: int = 20,
    shots: int = 3,
    iterations: int = 1,
    settings: dict[str, Any] | None = None,
    pool_path: str | None = None,
    scores_cache: str | Path | None = None,
    progress: bool = True,
) -> TrainedSelector:
    """Mine, score with the LLM, train; write the model and `selector.json` under `out`.

    LLM scores are cached in `scores_cache` (default `out/llm_scores.jsonl`); methods trained
    on the same pool, anchors and template can share one cache and pay for scoring once.
    """
    if method not in ("epr", "llm-r", "lail", "se2"):
        raise RagError(f"unknown selector training method {method!r}")
    out = Path(out)
    template = template or DemoTemplate()
    train_settings = _settings(method, settings or {})
    scorer = FeedbackScorer(generator, template, reduction="mean" if method == "llm-r" else "sum",
                            cache=scores_cache or out / "llm_scores.jsonl")
    scoring = training = 0.0
    retriever: Selector = BM25Selector().fit(pool)
    groups: list[Group] = []
    scored_before = len(scorer.cache.logprobs)
    for iteration in range(1, (iterations if method == "llm-r" else 1) + 1):
        began = time.perf_counter()
        mined = mine_candidates(retriever, pool, anchors, candidates)
        if method == "se2":
            groups = _sequential_groups(scorer, anchors, mined, shots, progress)
            scoring += time.perf_counter() - began
        else:
            scores = scorer.score(anchors, mined, progress=progress)
            scoring += time.perf_counter() - began
            if method == "llm-r":
                began = time.perf_counter()
                folder = out / f"reward-{iteration}"
                if not (folder / "model.safetensors").is_file():  # a rerun keeps the trained one
                    train_reward_model(anchors, mined, scores, folder, settings=RewardSettings(),
                                       progress=progress)
                scores = reward_scores(folder, anchors, mined)
                training += time.perf_counter() - began
            groups = [Group(query=a.input, candidates=[c.input for c in cands], scores=s)
                      for a, cands, s in zip(anchors, mined, scores)]
        began = time.perf_counter()
        folder = out if iteration == iterations or method != "llm-r" else out / f"iter-{iteration}"
        report = train_biencoder(groups, folder, settings=train_settings, progress=progress)
        training += time.perf_counter() - began
        encoder = {"type": "sentence_transformers", "model": str(Path(report.model).resolve())}
        retriever = KNNSelector(encoder=encoder).fit(pool)
    spec = {"type": "se2" if method == "se2" else "knn", "pool": pool_path, "encoder": encoder}
    atomic_write_json(out / SPEC, spec)
    return TrainedSelector(
        method=method, spec=spec, report=report, anchors=len(anchors), candidates=candidates,
        llm_scored=len(scorer.cache.logprobs) - scored_before, scoring_seconds=round(scoring, 2),
        training_seconds=round(training, 2),
    )


def _sequential_groups(
    scorer: FeedbackScorer, anchors: Sequence[Demo], mined: list[list[Demo]], shots: int,
    progress: bool,
) -> list[Group]:
    """Se²'s data: at each step score the remaining candidates after the chosen ones, keep
    the best; every step gives one group whose query encodes the examples chosen before it."""
    chosen: list[list[Demo]] = [[] for _ in anchors]
    groups: list[Group] = []
    for _ in range(shots):
        remaining = [[c for c in cands if c not in done] for cands, done in zip(mined, chosen)]
        scores = scorer.score(anchors, remaining, contexts=chosen, progress=progress)
        for a, done, cands, s in zip(anchors, chosen, remaining, scores):
            groups.append(Group(query=sequence_query(a.input, done),
                                candidates=[c.input for c in cands], scores=s))
        chosen = [[*done, cands[int(np.argmax(s))]]
                  for done, cands, s in zip(chosen, remaining, scores)]
    return groups
