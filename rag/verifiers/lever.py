"""LEVER (Ni et al. 2023): learn to verify programs from their execution, then rerank samples.

The verifier estimates P(correct | task, program, execution result). LEVER fine-tunes a T5 or
RoBERTa reader on the three as text; here, to fit a CPU, a logistic regression reads features
of the same three inputs (how the program ran on the docstring examples, what it raised, its
size, its LM log-probability). Samples are ranked as in the paper: P_LM x P_verifier, summed
over samples whose execution results are identical, and a sample of the best result returned.
The trained weights save as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.errors import RagError
from rag.storage import atomic_write_json, load_json
from rag.verifiers.code import Execution

ERRORS = ("AssertionError", "NameError", "TypeError", "SyntaxError", "IndexError", "ValueError",
          "TimeoutError", "AttributeError", "KeyError", "RecursionError")
FEATURES = (
    "checks_passed_share", "all_checks_passed", "no_checks", "probes_ok_share", "run_ok",
    "run_timeout", *(f"raised_{e}" for e in ERRORS), "raised_other", "mean_token_logprob",
    "log_tokens", "program_lines", "agreement_share",
)


def features(
    program: str, execution: Execution, logprob: float, tokens: int, agreement: float
) -> list[float]:
    """The verifier's input for one sample. `agreement`: share of the task's samples with the
    same execution result (the paper's aggregation, seen by the verifier as a feature too)."""
    checks, probes = execution.checks, execution.probes
    errors = [o.error for o in (*checks, *probes) if o.error] + (
        [execution.result.exception] if execution.result.exception else []
    )
    raised = [float(e in errors) for e in ERRORS]
    return [
        sum(c.ok for c in checks) / len(checks) if checks else 0.0,
        float(bool(checks) and all(c.ok for c in checks)),
        float(not checks),
        sum(p.ok for p in probes) / len(probes) if probes else 0.0,
        float(execution.result.status == "ok"),
        float(execution.result.status == "timeout"),
        *raised,
        float(any(e not in ERRORS for e in errors)),
        logprob / max(tokens, 1),
        math.log1p(tokens),
        float(len(program.splitlines())),
        agreement,
    ]


def agreement_shares(signatures: Sequence[tuple[str | None, ...]]) -> list[float]:
    counts: dict[tuple[str | None, ...], int] = {}
    for sig in signatures:
        counts[sig] = counts.get(sig, 0) + 1
    return [counts[sig] / len(signatures) for sig in signatures]


class LeverVerifier:
    """A logistic-regression verifier over `FEATURES`, standardized, class-balanced."""

    def __init__(self, c: float = 1.0) -> None:
        self.c = c
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.coef: np.ndarray | None = None
        self.intercept = 0.0

    def fit(self, x: Sequence[Sequence[float]], y: Sequence[bool]) -> LeverVerifier:
        from sklearn.linear_model import LogisticRegression

        data, labels = np.asarray(x, dtype=float), np.asarray(y, dtype=int)
        if data.ndim != 2 or data.shape[1] != len(FEATURES) or len(labels) != len(data):
            raise RagError(f"LEVER needs rows of {len(FEATURES)} features and one label per row")
        if len(set(labels.tolist())) < 2:
            raise RagError("LEVER needs both correct and incorrect samples to train")
        self.mean, self.scale = data.mean(0), data.std(0) + 1e-6
        model = LogisticRegression(C=self.c, class_weight="balanced", max_iter=1000)
        model.fit((data - self.mean) / self.scale, labels)
        self.coef, self.intercept = model.coef_[0], float(model.intercept_[0])
        return self

    def predict(self, x: Sequence[Sequence[float]]) -> list[float]:
        """P(correct) per row."""
        if self.coef is None:
            raise RagError("LEVER verifier is not trained: call fit() or load()")
        z = ((np.asarray(x, dtype=float) - self.mean) / self.scale) @ self.coef + self.intercept
        return (1.0 / (1.0 + np.exp(-z))).tolist()

    def save(self, path: str | Path) -> None:
        if self.coef is None:
            raise RagError("nothing to save: the verifier is not trained")
        atomic_write_json(Path(path), {
            "features": list(FEATURES), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "coef": self.coef.tolist(), "intercept": self.intercept, "c": self.c,
        })

    @classmethod
    def load(cls, path: str | Path) -> LeverVerifier:
        data = load_json(Path(path))
        if data.get("features") != list(FEATURES):
            raise RagError(f"{path}: saved for other features than this version's {FEATURES}")
        verifier = cls(c=data["c"])
        verifier.mean, verifier.scale = np.array(data["mean"]), np.array(data["scale"])
        verifier.coef, verifier.intercept = np.array(data["coef"]), float(data["intercept"])
        return verifier


def lever_select(
    logprobs: Sequence[float], p_verifier: Sequence[float], signatures: Sequence[tuple[str | None, ...]]
) -> int:
    """Index of the chosen sample: P_LM (normalized over the samples) x P_verifier, summed per
    execution result; the likeliest sample of the best result."""
    if not logprobs or not (len(logprobs) == len(p_verifier) == len(signatures)):
        raise RagError("lever_select needs one log-prob, verifier score and signature per sample")
    top = max(logprobs)
    p_lm = [math.exp(lp - top) for lp in logprobs]
    joint = [a * b for a, b in zip(p_lm, p_verifier)]
    totals: dict[tuple[str | None, ...], float] = {}
    for sig, score in zip(signatures, joint):
        totals[sig] = totals.get(sig, 0.0) + score
    best = max(totals, key=lambda sig: totals[sig])
    return max((i for i, sig in enumerate(signatures) if sig == best), key=lambda i: joint[i])
