"""Choose one of n sampled programs from how they ran: every picker behind one function.

- `first`: the first sample (what greedy decoding would give with n = 1);
- `random`: a sample at random (seeded by the task), the expected pass@1 of sampling;
- `logprob`: the highest mean token log-probability;
- `examples`: the most docstring `>>>` examples passed, ties by mean token log-probability;
- `codet`: CodeT's dual agreement over docstring examples and generated tests;
- `mbr_exec`: MBR-exec, the largest group computing the same values on the probes;
- `lever`: LEVER, P_LM x P_verifier summed over identical execution results (needs a trained
  `LeverVerifier`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal

from rag.errors import RagError
from rag.verifiers.code import CodeCheck, Execution, Program
from rag.verifiers.codet import codet_select
from rag.verifiers.consistency import mbr_exec
from rag.verifiers.lever import LeverVerifier, agreement_shares, features, lever_select

PickMethod = Literal["first", "random", "logprob", "examples", "codet", "mbr_exec", "lever"]
PICK_METHODS: tuple[PickMethod, ...] = ("first", "random", "logprob", "examples", "codet",
                                        "mbr_exec", "lever")


def lever_features(programs: Sequence[Program], executions: Sequence[Execution]) -> list[list[float]]:
    """LEVER's input rows for one task's samples (agreement counted within the task)."""
    shares = agreement_shares([e.signature for e in executions])
    return [features(p.code, e, p.logprob or 0.0, p.tokens, share)
            for p, e, share in zip(programs, executions, shares, strict=True)]


def pick(
    method: PickMethod, programs: Sequence[Program], checks: Sequence[CodeCheck],
    executions: Sequence[Execution], verifier: LeverVerifier | None = None, seed: str = "",
) -> int:
    """Index of the chosen program."""
    if not programs:
        raise RagError("nothing to pick from: no programs")
    if executions and len(executions) != len(programs):
        raise RagError("pick needs one execution per program")
    mean = [p.mean_logprob for p in programs]
    if method == "first":
        return 0
    if method == "random":
        digest = hashlib.sha256(seed.encode()).digest()
        return random.Random(digest).randrange(len(programs))
    if method == "logprob":
        return max(range(len(programs)), key=lambda i: mean[i])
    if not executions:
        raise RagError(f"picker {method!r} needs an `execute` stage before it")
    if method == "examples":
        example = [j for j, c in enumerate(checks) if c.origin == "example"]
        return max(range(len(programs)),
                   key=lambda i: (sum(executions[i].passed[j] for j in example), mean[i]))
    if method == "codet":
        return codet_select([e.passed for e in executions], mean)
    if method == "mbr_exec":
        return mbr_exec([e.signature for e in executions], mean)
    if method == "lever":
        if verifier is None:
            raise RagError("the lever picker needs a trained verifier (`verifier: PATH`)")
        p_verifier = verifier.predict(lever_features(programs, executions))
        return lever_select([p.logprob or 0.0 for p in programs], p_verifier,
                            [e.signature for e in executions])
    raise RagError(f"unknown picker {method!r}; known: {', '.join(PICK_METHODS)}")
