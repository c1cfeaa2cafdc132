"""The one training loop every learned selector shares: a bi-encoder taught by teacher scores.

Each anchor brings a group: the text its query side encodes, candidate demonstrations, and a
teacher score per candidate (the LLM's, or a reward model's). Per step, every anchor contributes
one positive (sampled from its best-scored candidates) and `group_size - 1` hard negatives
(sampled from its worst); the loss mixes
- InfoNCE: −log softmax of the positive against every candidate in the batch (its own hard
  negatives and the other anchors' candidates, DPR's in-batch negatives), and
- KL(softmax(teacher) ‖ softmax(student)) over the anchor's own group (LLM-R's distillation).
EPR and LAIL use InfoNCE alone with one hard negative; LLM-R uses KL + 0.2·InfoNCE.

Query and candidates share one encoder (a simplification of DPR's two towers that halves the
parameters to train on a CPU). Checkpoints are written every epoch; a rerun resumes after the
last finished epoch (weights only: the optimizer restarts, which costs a little at epoch
boundaries and keeps checkpoints small and pickle-free).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from rag.errors import RagError
from rag.models import resolve_model
from rag.storage import atomic_write_json, load_json

STATE = "train_state.json"
MODEL = "model"


class Group(BaseModel):
    """One anchor's training data: query-side text, candidate texts, teacher score of each."""

    query: str
    candidates: list[str] = Field(min_length=2)
    scores: list[float]


class TrainSettings(BaseModel):
    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=16, ge=2)
    learning_rate: float = Field(default=3e-5, gt=0)
    temperature: float = Field(default=0.05, gt=0, description="student softmax temperature τ")
    group_size: int = Field(default=2, ge=2, description="1 positive + hard negatives per anchor")
    positives: int = Field(default=3, ge=1, description="sample the positive from this many best")
    negatives: int = Field(default=5, ge=1, description="sample negatives from this many worst")
    infonce_weight: float = Field(default=1.0, ge=0)
    kl_weight: float = Field(default=0.0, ge=0)
    max_length: int = Field(default=256, ge=8, description="encoder tokens per text")
    seed: int = 0


class TrainReport(BaseModel):
    epochs: int
    steps: int
    losses: list[float] = Field(description="mean training loss of each epoch")
    seconds: float
    model: str


def split_by_score(scores: Sequence[float], positives: int, negatives: int) -> tuple[
        list[int], list[int]]:
    """EPR's split: the `positives` best-scored candidates, best first, and the `negatives`
    worst-scored among the rest, worst first (ties keep candidate order)."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable").tolist()
    best = order[:positives]
    return best, [i for i in order[::-1][:negatives] if i not in best]


def _sample(group: Group, settings: TrainSettings, rng: np.random.Generator) -> list[int]:
    """Indices of [positive, negatives...] for one anchor, best- and worst-scored by the teacher."""
    need = settings.group_size - 1
    # Few candidates: shrink the positive pool so that negatives remain.
    best, worst = split_by_score(group.scores, min(settings.positives, len(group.scores) - need),
                                 settings.negatives)
    if len(worst) < need:
        raise RagError(f"a group of {len(group.candidates)} candidates cannot give "
                       f"{settings.positives} positives and {need} distinct negatives")
    return [int(rng.choice(best)), *rng.choice(worst, size=need, replace=False).tolist()]


def _embed(model: Any, texts: list[str]) -> Any:
    import torch.nn.functional as F

    features = model.tokenize(texts)
    features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
    return F.normalize(model(features)["sentence_embedding"], dim=-1)


def batch_loss(model: Any, groups: Sequence[Group], picks: Sequence[list[int]],
               settings: TrainSettings) -> Any:
    """The mixed InfoNCE + KL loss of one batch (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    size = settings.group_size
    queries = _embed(model, [g.query for g in groups])
    candidates = _embed(model, [g.candidates[i] for g, pick in zip(groups, picks) for i in pick])
    logits = queries @ candidates.T / settings.temperature  # (B, B * size)
    loss = torch.zeros((), device=logits.device)
    if settings.infonce_weight:
        target = torch.arange(len(groups), device=logits.device) * size
        loss = loss + settings.infonce_weight * F.cross_entropy(logits, target)
    if settings.kl_weight:
        own = torch.stack([logits[i, i * size : (i + 1) * size] for i in range(len(groups))])
        teacher = torch.tensor([[g.scores[i] for i in pick] for g, pick in zip(groups, picks)],
                               dtype=own.dtype, device=own.device).softmax(-1)
        loss = loss + settings.kl_weight * F.kl_div(own.log_softmax(-1), teacher,
                                                    reduction="batchmean")
    return loss


def load_encoder(path: str | Path, max_length: int) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model(str(path))), device="cpu")
    model.max_seq_length = max_length
    return model


def mean_loss(model_path: str | Path, groups: Sequence[Group], settings: TrainSettings) -> float:
    """The loss on fixed samples (seeded), without gradients: comparable across checkpoints."""
    import torch

    model = load_encoder(model_path, settings.max_length)
    model.eval()
    rng = np.random.default_rng(settings.seed)
    picks = [_sample(g, settings, rng) for g in groups]
    total, size = 0.0, settings.batch_size
    with torch.inference_mode():
        for start in range(0, len(groups), size):
            part = slice(start, start + size)
            total += float(batch_loss(model, groups[part], picks[part], settings)) * len(groups[part])
    return total / len(groups)


def train_biencoder(
    groups: Sequence[Group],
    out: str | Path,
    base: str = "encoder",
    settings: TrainSettings | None = None,
    progress: bool = True,
) -> TrainReport:
    """Fine-tune `base` on the groups; the model lands in `out/model`, resumable by epoch."""
    import torch

    settings = settings or TrainSettings()
    if len(groups) < 2:
        raise RagError("training needs at least 2 anchors (in-batch negatives)")
    for g in groups:
        if len(g.scores) != len(g.candidates):
            raise RagError("each group needs one teacher score per candidate")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fresh = {"epoch": 0, "losses": [], "steps": 0, "seconds": 0.0, "base": base,
             "settings": settings.model_dump(), "anchors": len(groups)}
    state = load_json(out / STATE, "training state") if (out / STATE).is_file() else fresh
    if {k: state.get(k) for k in ("base", "settings", "anchors")} != {
            k: fresh[k] for k in ("base", "settings", "anchors")}:
        raise RagError(f"{out} holds a training run with other settings or data; "
                       "use another output folder")
    start = int(state["epoch"])
    model = load_encoder(out / f"checkpoint-{start}" if start else base, settings.max_length)
    torch.manual_seed(settings.seed + start)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    for epoch in range(start + 1, settings.epochs + 1):
        began = time.perf_counter()
        rng = np.random.default_rng([settings.seed, epoch])
        order = rng.permutation(len(groups))
        losses = []
        model.train()
        steps = range(0, len(order) - 1, settings.batch_size)  # a last batch of one has no negatives
        for s in tqdm(steps, desc=f"epoch {epoch}/{settings.epochs}", disable=not progress):
            batch = [groups[i] for i in order[s : s + settings.batch_size]]
            if len(batch) < 2:
                continue
            loss = batch_loss(model, batch, [_sample(g, settings, rng) for g in batch], settings)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.save(str(out / f"checkpoint-{epoch}"))
        shutil.rmtree(out / f"checkpoint-{epoch - 1}", ignore_errors=True)
        state = {**state, "epoch": epoch, "losses": [*state["losses"], float(np.mean(losses))],
                 "steps": state["steps"] + len(losses),
                 "seconds": state["seconds"] + time.perf_counter() - began}
        atomic_write_json(out / STATE, state)
    final = out / MODEL
    if not final.is_dir():
        shutil.copytree(out / f"checkpoint-{settings.epochs}", final)
    return TrainReport(epochs=settings.epochs, steps=state["steps"], losses=state["losses"],
                       seconds=round(state["seconds"], 2), model=str(final))
