"""CodeT dual execution agreement (Chen et al. 2022): pick a program that many programs agree
with on many generated tests.

Programs that pass exactly the same tests form a consensus set, scored
|programs in the set| x |tests they pass|; the answer is a program from the best set.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from rag.errors import RagError


class ConsensusSet(BaseModel):
    programs: list[int]
    tests: list[int]

    @property
    def score(self) -> int:
        return len(self.programs) * len(self.tests)


def consensus_sets(passed: Sequence[Sequence[bool]]) -> list[ConsensusSet]:
    """Group programs by the set of tests they pass; best score first (larger sets on ties)."""
    if not passed:
        raise RagError("CodeT needs at least one program")
    groups: dict[tuple[int, ...], list[int]] = {}
    for program, row in enumerate(passed):
        groups.setdefault(tuple(j for j, ok in enumerate(row) if ok), []).append(program)
    sets = [ConsensusSet(programs=members, tests=list(tests)) for tests, members in groups.items()]
    return sorted(sets, key=lambda s: (-s.score, -len(s.programs), s.programs[0]))


def codet_select(passed: Sequence[Sequence[bool]], logprobs: Sequence[float] | None = None) -> int:
    """Index of the chosen program: the most likely one (by LM log-prob) of the best set."""
    best = consensus_sets(passed)[0].programs
    return max(best, key=lambda i: logprobs[i]) if logprobs is not None else best[0]
