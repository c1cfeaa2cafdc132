"""A question with its gold answers: what every QA data set here yields."""

from __future__ import annotations

from pydantic import BaseModel, Field

from rag.types import Message


class QAExample(BaseModel):
    id: str
    question: str
    answers: list[str] = Field(min_length=1)
    gold_doc: str | None = Field(default=None, description="id of the document holding the answer")
    kind: str | None = Field(default=None, description="the answer's type, where the set has one")
    evidence: str | None = Field(default=None, description="the sentence stating the answer")
    history: list[Message] = Field(default_factory=list,
                                   description="earlier turns of a conversation, oldest first")
