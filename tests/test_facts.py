"""The factual QA set (`vital-facts`), unit-aware answer scoring and the QA recipe's settings."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from rag.corpus import vital_articles
from rag.errors import DatasetError
from rag.eval.datasets import VITAL_FACTS, load_qa, vital_qa, vital_qa_split
from rag.eval.facts import split_of, vital_facts
from rag.eval.metrics import exact_match
from rag.pipeline import Pipeline
from rag.recipes import BM25_WEIGHT, best_qa, rag_qa
from rag.retrievers import HybridRetriever, open_index
from rag.retrievers.fusion import convex
from rag.selectors.base import write_demos
from rag.types import Demo, Document


@pytest.fixture(scope="module")
def facts():
    docs = vital_articles()
    return {d.id: d for d in docs}, vital_facts(docs, "all")


def test_every_answer_is_a_stated_fact_not_the_title(facts):
    docs, questions = facts
    assert len(questions) >= 1000
    for q in questions:
        doc = docs[q.gold_doc]
        answer = q.answers[0]
        assert q.evidence in doc.text.replace("\xa0", " ")  # the sentence is the article's
        assert answer in q.evidence
        assert answer.lower() != doc.title.lower()
        assert answer.lower() not in q.question.lower()
        assert doc.title in q.question
    kinds = Counter(q.kind for q in questions)
    for kind in ("year", "place", "person", "quantity", "language", "biological family"):
        assert kinds[kind] >= 10, kinds
    assert kinds["nationality"] <= len(questions) // 3  # capped: it would be most of the set


def test_dev_and_test_split_by_article(facts):
    docs, _ = facts
    dev, test = vital_facts(list(docs.values()), "dev"), vital_facts(list(docs.values()), "test")
    assert {q.gold_doc for q in dev}.isdisjoint({q.gold_doc for q in test})
    assert all(split_of(q.gold_doc) == "dev" for q in dev)
    assert len(test) >= 500
    assert [q.id for q in load_qa(VITAL_FACTS, limit=5)] == [q.id for q in test[:5]]
    with pytest.raises(DatasetError, match="split"):
        vital_facts(list(docs.values()), "train")


def test_rules_read_a_sentence_about_the_article():
    film = Document(id="Zed", title="Zed", text=(
        "Zed is a 1999 American drama film directed by Jane Roe. Roe's home town was founded in "
        "1888 and has a population of 12,000."), metadata={"topic": "Arts"})
    found = {q.id.split("#")[1]: q for q in vital_facts([film], "all")}
    assert found["work_year"].question == "In what year was the film Zed released?"
    assert found["work_year"].answers == ["1999"]
    assert found["director"].answers == ["Jane Roe"]
    # The second sentence is about another subject: no founding year or population of Zed.
    assert "dated" not in found and "population" not in found
    person = Document(id="Ann Lee", title="Ann Lee", text="Ann Lee was a French-American painter.",
                      metadata={"topic": "People"})
    assert vital_facts([person], "all") == []  # a double nationality is not one answer


def test_units_and_thousands_compare_sensibly():
    assert exact_match("8,848.86 metres", ["8848.86 m"]) == 1.0
    assert exact_match("1483m", ["1,483 metres"]) == 1.0
    assert exact_match("513,115 square kilometres", ["513,115 km2"]) == 1.0
    assert exact_match("8,848.86 feet", ["8,848.86 metres"]) == 0.0
    assert exact_match("2 million", ["2 mi"]) == 0.0


def test_vital_qa_dev_is_disjoint_from_its_published_test():
    test, dev = vital_qa_split("test"), vital_qa_split("dev")
    assert [q.id for q in test] == [q.id for q in vital_qa(500)]
    assert len(dev) == 500 and not {q.id for q in dev} & {q.id for q in test}


def test_qa_recipe_builds_each_setting(index_dir: Path, vllm_tiny):
    index = open_index(index_dir)
    plain = rag_qa(index, vllm_tiny, k=3, compression=None, fusion="rrf", order="relevance_first")
    assert [s.name for s in plain.stages] == ["retrieve", "rag_prompt", "generate"]
    retriever = plain.stages[0].retriever
    assert isinstance(retriever, HybridRetriever) and retriever.config.method == "rrf"
    assert plain.stages[1].config.order == "relevance_first"
    assert re.search(r"no other words", plain.stages[1].config.system)
    squeezed = rag_qa(index, vllm_tiny, compression=1.5)
    assert [s.name for s in squeezed.stages][1] == "compress"
    assert squeezed.stages[0].retriever is index  # the saved fusion unless asked otherwise
    around = rag_qa(index, vllm_tiny, k=3, compression=None, fusion="rrf",
                    order="relevance_first", repeat_question=True)
    question = "Which 1968 film did Stanley Kubrick direct?"
    asked = [Pipeline(p.stages[:2]).run([question])[0].prompt.messages[-1].content
             for p in (plain, around)]
    assert asked[0].startswith("Passages:\n[1] ") and asked[0].count(question) == 1
    assert asked[1] == f"Question: {question}\n\n{asked[0]}"  # the same passages, asked twice


def test_qa_recipe_shows_the_nearest_solved_questions_before_the_passages(
        index_dir: Path, vllm_tiny, tmp_path: Path):
    pool = write_demos(tmp_path / "pool.jsonl", [
        Demo(id="film", input="Which 1964 film did Stanley Kubrick direct?",
             output="Dr. Strangelove"),
        Demo(id="director", input="Who directed the 1975 film Barry Lyndon?",
             output="Stanley Kubrick"),
        Demo(id="element", input="What is the chemical symbol of gold?", output="Au"),
    ])
    pipeline = rag_qa(open_index(index_dir), vllm_tiny, compression=None, demos=pool, shots=2)
    assert [s.name for s in pipeline.stages] == ["retrieve", "select", "rag_prompt", "generate"]
    question = "Which 1968 film did Stanley Kubrick direct?"
    messages = Pipeline(pipeline.stages[:3]).run([question])[0].prompt.messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant",
                                          "user"]
    # The nearest demonstration sits next to the question; the unrelated third is left out.
    assert messages[1].content == "Question: Who directed the 1975 film Barry Lyndon?"
    assert messages[3].content == "Question: Which 1964 film did Stanley Kubrick direct?"
    assert (messages[2].content, messages[4].content) == ("Stanley Kubrick", "Dr. Strangelove")
    assert "Au" not in [m.content for m in messages]
    assert messages[5].content.startswith("Passages:\n[1] ") and question in messages[5].content
    plain = rag_qa(open_index(index_dir), vllm_tiny, compression=None)
    alone = Pipeline(plain.stages[:2]).run([question])[0].prompt.messages
    assert [m.role for m in alone] == ["system", "user"] and alone[1] == messages[5]


def test_the_qa_default_fuses_convexly_and_round_trips(index_dir: Path, vllm_tiny):
    index = open_index(index_dir)
    default = best_qa(index, vllm_tiny)
    assert [s.name for s in default.stages] == ["condense", "retrieve", "rag_prompt", "generate"]
    assert default.stages[2].config.order == "relevance_first"
    assert default.stages[1].config.k == 3  # chosen on both dev splits (qa_general.py round 3)
    assert default.stages[0].generator is default.stages[-1].generator  # one engine for both
    fused = default.stages[1].retriever
    assert fused is index and fused.config.method == "convex"  # as `rag index` saved it
    assert fused.config.weights == [BM25_WEIGHT, 1 - BM25_WEIGHT]
    query = ["Which 1968 film did Stanley Kubrick direct?"]
    assert default.stages[1].config.search == "fused"  # a follow-up: rewrite + conversation
    again = Pipeline.from_yaml(default.to_yaml()).stages[1]
    reloaded = again.retriever
    assert reloaded.config.method == "convex" and again.config.search == "fused"
    ids = [h.chunk.id for h in fused.search(query, k=5)[0]]
    assert [h.chunk.id for h in reloaded.search(query, k=5)[0]] == ids
    runs = [child.search(query, k=fused.config.candidates)[0] for child in index.retrievers]
    assert ids == [h.chunk.id for h in convex(runs, fused.config.weights)[:5]]


def test_followups_name_their_subject_only_in_the_first_turn():
    from rag.eval.followups import refer, vital_followups

    docs = vital_articles()
    conversations = vital_followups(docs)
    assert len(conversations) >= 300
    by_id = {d.id: d for d in docs}
    for c in conversations:
        title = by_id[c.gold_doc].title
        assert title not in c.question and title in c.history[0].content
        assert [m.role for m in c.history] == ["user", "assistant"]
    oman = Document(id="Oman", title="Oman", text="Oman is a country.")
    assert refer("What is the population of Oman?", "Oman", oman) == "What is its population?"
    curie = Document(id="Marie Curie", title="Marie Curie", text="She was a physicist. Her work...",
                     metadata={"topic": "People"})
    assert refer("Where was Marie Curie born?", "Marie Curie", curie) == "Where was she born?"
    assert refer("Who married Marie Curie?", "Marie Curie", curie) == "Who married her?"
    assert refer("In what year was the film Jaws released?", "Jaws",
                 Document(id="Jaws", title="Jaws", text="A film.")) == "In what year was it released?"
