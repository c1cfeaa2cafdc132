"""Self-consistency: trust the answer most samples agree on.

For QA, a majority vote over normalized answers (Wang et al. 2023). For code, MBR-exec
(Shi et al. 2022): programs that compute the same values on shared inputs are one answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

from rag.errors import RagError
from rag.text import normalize_answer


def _vote(keys: Sequence[Hashable], logprobs: Sequence[float] | None) -> tuple[int, float]:
    if not keys:
        raise RagError("self-consistency needs at least one sample")
    counts = Counter(keys)
    top = max(counts.values())
    winners = [i for i, key in enumerate(keys) if counts[key] == top]
    chosen = max(winners, key=lambda i: logprobs[i]) if logprobs is not None else winners[0]
    return chosen, top / len(keys)


def majority_answer(answers: Sequence[str], logprobs: Sequence[float] | None = None) -> tuple[int, float]:
    """(index of a representative sample, share of votes) for the most common normalized answer;
    ties go to the answer whose sample the LM found likelier."""
    return _vote([normalize_answer(a) for a in answers], logprobs)


def mbr_exec(signatures: Sequence[tuple[str | None, ...]], logprobs: Sequence[float] | None = None) -> int:
    """Index of a program from the largest group computing the same probe values. Programs
    that failed every probe never form a group: crashing alike is not agreement."""
    keys = [sig if any(v is not None and not v.startswith("!") for v in sig) else ("failed", i)
            for i, sig in enumerate(signatures)]
    return _vote(keys, logprobs)[0]
