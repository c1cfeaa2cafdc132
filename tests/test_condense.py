"""The condense stage: a follow-up is searched as a standalone question, the prompt keeps the
user's words, and a query without history costs no generation."""

from __future__ import annotations

from collections.abc import Sequence

from rag.generators.base import Generator
from rag.pipeline import Pipeline
from rag.prompts.condense import condense_prompt, first_line
from rag.registry import ComponentConfig, register
from rag.retrievers import BM25Retriever
from rag.retrievers.stage import Retrieve
from rag.state import State
from rag.types import Chunk, Completion, Generation, Message, Usage

REWRITE = "Who wrote the novel that 2001: A Space Odyssey was developed with?"


@register("generator", "test_condense_rewriter")
class Rewriter(Generator):
    """Answers every prompt with a labelled, quoted rewrite, and keeps the prompts."""

    class Config(ComponentConfig):
        pass

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prompts: list = []

    def generate(self, prompts: Sequence, params=None) -> list[Generation]:
        self.prompts += list(prompts)
        return [Generation(completions=[Completion(text=f'Standalone question: "{REWRITE}"\nDone.')],
                           usage=Usage(prompt_tokens=40)) for _ in prompts]


def chunk(doc: str, text: str) -> Chunk:
    return Chunk(id=doc, doc_id=doc, text=text, start=0, end=len(text), title=doc)


def test_a_follow_up_is_searched_as_its_rewrite_and_asked_in_the_users_words():
    index = BM25Retriever()
    index.index([chunk("2001: A Space Odyssey (novel)", "A 1968 science fiction novel by Arthur "
                       "C. Clarke, developed with the film 2001: A Space Odyssey."),
                 chunk("Brave New World", "A dystopian novel by Aldous Huxley written in 1931."),
                 chunk("Robinson Crusoe", "A novel by Daniel Defoe, who wrote it in 1719.")])
    pipeline = Pipeline([{"type": "condense", "generator": {"type": "test_condense_rewriter"}},
                         Retrieve(index, k=1), {"type": "rag_prompt"}])
    rewriter = pipeline.stages[0].generator
    history = [Message(role="user", content="Which 1968 film did Stanley Kubrick direct?"),
               Message(role="assistant", content="2001: A Space Odyssey.")]
    follow_up = "Who wrote the novel it was developed with?"
    fresh, asked = pipeline.run([State(query="Who wrote Brave New World?"),
                                 State(query=follow_up, history=history)])
    assert fresh.standalone == "Who wrote Brave New World?" and len(rewriter.prompts) == 1
    assert asked.standalone == REWRITE
    assert asked.hits[0].chunk.doc_id == "2001: A Space Odyssey (novel)"
    assert fresh.hits[0].chunk.doc_id == "Brave New World"
    shown = rewriter.prompts[0].messages[-1].content
    assert "User: Which 1968 film did Stanley Kubrick direct?" in shown
    assert "Assistant: 2001: A Space Odyssey." in shown and follow_up in shown
    assert asked.prompt.messages[-1].content.endswith(f"Question: {follow_up}")  # the user's words
    assert [m.content for m in asked.prompt.messages[1:3]] == [m.content for m in history]


def test_only_the_last_turns_are_shown_and_the_rewrite_is_cleaned():
    history = [Message(role="user", content=f"question {i}") for i in range(10)]
    shown = condense_prompt(history, "and then?", turns=3).messages[-1].content
    assert "question 6" not in shown and "question 7" in shown and "question 9" in shown
    assert first_line('\n  "Who founded Amazon.com?"\nextra') == "Who founded Amazon.com?"
    assert first_line("Standalone question: Where is it?") == "Where is it?"
