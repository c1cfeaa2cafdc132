"""The condense stage: a follow-up is searched as a standalone question, the prompt keeps the
user's words, and a query without history costs no generation."""

from __future__ import annotations

from collections.abc import Sequence

from rag.generators.base import Generator
from rag.pipeline import Pipeline
from rag.prompts.condense import condense_prompt, first_line
from rag.registry import ComponentConfig, register
from rag.retrievers import BM25Retriever
from rag.retrievers.stage import Retrieve, conversation_query
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


@register("generator", "test_condense_echo")
class Echo(Generator):
    """A rewriter that fails as small models do: it gives back the follow-up, pronoun and all."""

    class Config(ComponentConfig):
        pass

    def generate(self, prompts: Sequence, params=None) -> list[Generation]:
        last = [p.messages[-1].content.split("Last message: ")[1].split("\n")[0] for p in prompts]
        return [Generation(completions=[Completion(text=text)], usage=Usage(prompt_tokens=40))
                for text in last]


def animal_index() -> BM25Retriever:
    index = BM25Retriever()
    index.index([chunk("Muskox", "The muskox is a hoofed mammal of the Arctic."),
                 chunk("Bovidae", "Bovidae is the biological family of cloven-hoofed ruminants "
                                  "to which a species may belong."),
                 chunk("Canidae", "Canidae is the biological family of dogs and wolves.")])
    return index


def test_fused_search_recovers_a_rewrite_that_kept_its_pronoun():
    history = [Message(role="user", content="Tell me about the muskox."),
               Message(role="assistant", content="The muskox is a hoofed mammal of the Arctic.")]
    follow_up = "To which biological family does it belong?"
    tops = {}
    for search in ("query", "conversation", "fused"):
        pipeline = Pipeline([{"type": "condense", "generator": {"type": "test_condense_echo"}},
                             Retrieve(animal_index(), k=2, search=search)])
        asked, fresh = pipeline.run([State(query=follow_up, history=history),
                                     State(query="Which family are dogs in?")])
        assert asked.standalone == follow_up  # the rewrite failed
        assert fresh.hits[0].chunk.doc_id == "Canidae"  # no history: the query, in every mode
        tops[search] = [h.chunk.doc_id for h in asked.hits]
    assert "Muskox" not in tops["query"]
    assert tops["conversation"][0] == "Muskox"
    assert "Muskox" in tops["fused"] and len(tops["fused"]) == 2
    fused = Pipeline([Retrieve(animal_index(), k=2, search="fused")]).run(
        [State(query=follow_up, history=history)])[0].hits
    assert {h.retriever for h in fused} == {"conversation"}
    assert set(fused[0].scores) <= {"standalone", "conversation"}


def test_the_conversation_is_searched_newest_first_and_only_its_last_turns():
    history = [Message(role="user", content=f"turn {i}") for i in range(8)]
    assert conversation_query(history, "now?", turns=3) == "now? turn 7 turn 6 turn 5"
    assert conversation_query([], "alone") == "alone"
