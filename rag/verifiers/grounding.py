"""Does the cited evidence support the answer? A cheap string check first, then an LLM judge.

String containment of the normalized answer in a normalized passage settles short factoid
answers; otherwise, when a generator is given, P("Yes") to "Is the answer supported by the
passages?" from its next-token log-probabilities decides (threshold 0.5 by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from rag.generators.base import Generator, yes_probability
from rag.text import normalize_answer
from rag.types import Prompt

JUDGE = (
    "Passages:\n{passages}\n\nQuestion: {question}\nAnswer: {answer}\n\n"
    "Is the answer supported by the passages? Answer Yes or No."
)


class Grounding(BaseModel):
    supported: bool | None = Field(description="None: containment failed and no judge was given")
    method: Literal["containment", "llm", "none"]
    score: float


def check_grounding(
    questions: Sequence[str],
    answers: Sequence[str],
    passages: Sequence[Sequence[str]],
    generator: Generator | None = None,
    threshold: float = 0.5,
) -> list[Grounding]:
    """One verdict per answer; the LLM judges, in one batch, only what containment left open."""
    verdicts: list[Grounding | None] = []
    for answer, texts in zip(answers, passages, strict=True):
        needle = normalize_answer(answer)
        contained = bool(needle) and any(needle in normalize_answer(t) for t in texts)
        verdicts.append(Grounding(supported=True, method="containment", score=1.0) if contained else None)
    open_ = [i for i, v in enumerate(verdicts) if v is None]
    if generator is not None and open_:
        prompts = [
            Prompt.chat(JUDGE.format(passages="\n\n".join(passages[i]), question=questions[i],
                                     answer=answers[i]))
            for i in open_
        ]
        for i, p_yes in zip(open_, yes_probability(generator, prompts)):
            verdicts[i] = Grounding(supported=p_yes >= threshold, method="llm", score=p_yes)
    return [v or Grounding(supported=None, method="none", score=0.0) for v in verdicts]
