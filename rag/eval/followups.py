"""vital-followups: two-turn conversations whose second question names its subject only by a
pronoun, for measuring follow-up questions (the `condense` stage).

Built from the factual set (`rag.eval.facts`): turn 1 asks about an article's subject ("Tell me
about Hanoi.") and the assistant answers with the article's first sentence; turn 2 is a factual
question about that subject with its name replaced by a pronoun ("What is the population of
it?"). The gold article and answers are the factual question's. People get "he"/"him"/"his" or
"she"/"her", by which of the two the article uses more; everything else "it"/"its".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.eval.facts import VITAL_FACTS, vital_facts
from rag.eval.qa import QAExample
from rag.types import Document, Message

VITAL_FOLLOWUPS = "vital-followups"
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# the words after which a name is the clause's subject (else it is an object)
_SUBJECT_AFTER = {"is", "was", "are", "were", "did", "does", "do", "has", "had", "when", "where",
                  "who", "what", "which", "how"}


def pronouns(doc: Document) -> tuple[str, str, str]:
    """(subject, object, possessive) pronouns for an article's subject."""
    if doc.metadata.get("topic") != "People":
        return "it", "it", "its"
    words = re.findall(r"[a-z]+", doc.text.lower())
    male = sum(words.count(w) for w in ("he", "him", "his"))
    female = sum(words.count(w) for w in ("she", "her", "hers"))
    return ("she", "her", "her") if female > male else ("he", "him", "his")


def refer(question: str, name: str, doc: Document) -> str | None:
    """`question` with `name` replaced by a pronoun, or None where the name does not occur."""
    at = question.find(name)
    if at < 0:
        return None
    subject, obj, possessive = pronouns(doc)
    after = question[at + len(name):]
    if after.startswith(("'s", "’s")):
        return question[:at] + possessive + after[2:]
    owned = re.search(r"\bthe ([\w -]+?) of $", question[:at])
    if owned:  # "the population of Oman" -> "its population"
        return question[: owned.start()] + f"{possessive} {owned.group(1)}" + after
    kind = re.search(r"\bthe [a-z]+ $", question[:at])
    if kind:  # "was the musical The Wizard of Oz first performed" -> "was it first performed"
        return question[: kind.start()] + subject + after
    before = question[:at].split()
    word = subject if before and before[-1].lower() in _SUBJECT_AFTER else obj
    return question[:at] + word + after


def first_sentence(text: str) -> str:
    return _FIRST_SENTENCE.split(text.strip(), maxsplit=1)[0]


def vital_followups(docs: Sequence[Document], split: str = "test") -> list[QAExample]:
    """One conversation per factual question of `split` whose question names its article."""
    by_id = {d.id: d for d in docs}
    conversations = []
    for fact in vital_facts(docs, split):
        doc = by_id.get(fact.gold_doc or "")
        followup = refer(fact.question, doc.title, doc) if doc else None
        if doc is None or followup is None:
            continue
        history = [Message(role="user", content=f"Tell me about {doc.title}."),
                   Message(role="assistant", content=first_sentence(doc.text))]
        conversations.append(fact.model_copy(update={
            "id": f"{fact.id}#followup", "question": followup, "history": history}))
    return conversations


__all__ = ["VITAL_FACTS", "VITAL_FOLLOWUPS", "vital_followups"]
