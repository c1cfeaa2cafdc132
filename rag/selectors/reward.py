"""LLM-R's reward model: a cross-encoder that reads (anchor + gold output, candidate) together.

It learns the LLM's preferences from groups of 8 (one positive from the 3 best-scored
candidates, 7 negatives from the worst) with cross-entropy over the group, then rescores every
candidate; the bi-encoder is distilled from those rewards. No cross-encoder checkpoint is
available offline, so it starts from the default encoder's weights with a fresh scoring head.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from rag.errors import RagError
from rag.models import resolve_model
from rag.selectors.base import regroup
from rag.selectors.training import split_by_score
from rag.types import Demo


class RewardSettings(BaseModel):
    epochs: int = Field(default=1, ge=1, description="one pass: the scores are few and a CPU is slow")
    anchors_per_batch: int = Field(default=4, ge=1)
    group_size: int = Field(default=8, ge=2)
    positives: int = Field(default=3, ge=1)
    negatives: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=3e-5, gt=0)
    max_length: int = Field(default=256, ge=8)
    seed: int = 0


def _pair_texts(anchor: Demo, candidate: Demo) -> tuple[str, str]:
    return f"{anchor.input} {anchor.output}", f"{candidate.input} {candidate.output}"


def _load(path: str | Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(str(path))
    return (AutoTokenizer.from_pretrained(path),
            AutoModelForSequenceClassification.from_pretrained(path, num_labels=1))


def _logits(tokenizer: Any, model: Any, pairs: list[tuple[str, str]], max_length: int) -> Any:
    batch = tokenizer([a for a, _ in pairs], [c for _, c in pairs], truncation=True,
                      max_length=max_length, padding=True, return_tensors="pt")
    return model(**batch).logits.squeeze(-1)


def train_reward_model(
    anchors: Sequence[Demo],
    candidates: Sequence[Sequence[Demo]],
    scores: Sequence[Sequence[float]],
    out: str | Path,
    base: str = "encoder",
    settings: RewardSettings | None = None,
    progress: bool = True,
) -> Path:
    """Train and save the cross-encoder under `out`; returns its folder."""
    import torch
    import torch.nn.functional as F

    settings = settings or RewardSettings()
    tokenizer, model = _load(base)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    torch.manual_seed(settings.seed)
    # One positive and as many negatives as the candidates allow, up to the paper's group of 8.
    need = min(settings.group_size - 1, settings.negatives,
               min(map(len, candidates)) - settings.positives)
    if need < 1:
        raise RagError(f"reward groups need more than {settings.positives} candidates per anchor")
    for epoch in range(1, settings.epochs + 1):
        rng = np.random.default_rng([settings.seed, epoch])
        model.train()
        order = rng.permutation(len(anchors))
        steps = range(0, len(order), settings.anchors_per_batch)
        for s in tqdm(steps, desc=f"reward model {epoch}/{settings.epochs}", disable=not progress):
            pairs, used = [], 0
            for i in order[s : s + settings.anchors_per_batch]:
                best, worst = split_by_score(scores[i], settings.positives, settings.negatives)
                pick = [rng.choice(best),
                        *rng.choice(worst, size=need, replace=False)]
                pairs += [_pair_texts(anchors[i], candidates[i][j]) for j in pick]
                used += 1
            logits = _logits(tokenizer, model, pairs, settings.max_length).view(used, -1)
            loss = F.cross_entropy(logits, torch.zeros(used, dtype=torch.long))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    out = Path(out)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)  # the weights file comes last: its presence marks a finished model
    return out


def reward_scores(
    model_path: str | Path,
    anchors: Sequence[Demo],
    candidates: Sequence[Sequence[Demo]],
    batch_size: int = 64,
    max_length: int = 256,
) -> list[list[float]]:
    """The reward model's score of each anchor's candidates."""
    import torch

    tokenizer, model = _load(model_path)
    model.eval()
    pairs = [_pair_texts(a, c) for a, cands in zip(anchors, candidates) for c in cands]
    flat: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            flat += _logits(tokenizer, model, pairs[start : start + batch_size], max_length).tolist()
    return regroup(flat, candidates)
