"""Do retrieved demonstrations help the QA default? Its pipeline with and without kNN-chosen
solved questions shown before the passages (`rag_qa(demos=..., shots=...)`, KATE-style).

The questions are the first `--questions` of each dev split (vital-qa and vital-facts, the
`dev final` questions of benchmarks/qa_general.py); the pool is every other dev question of both
sets whose article none of those questions is about, so no demonstration states a held-out
answer. The default without demonstrations is read from qa_general's stored `dev final`
predictions (copied, not regenerated; `setup.baseline` says where they were made); each row pairs
the two by question (95% bootstrap interval of the EM difference).

    python benchmarks/qa_demos.py [--questions 150] [--shots 2] [--work .cache/bench-qa]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from qa_general import QAConfig, article_indexes

from rag.corpus import vital_articles
from rag.eval.datasets import QAExample, vital_qa_split
from rag.eval.facts import vital_facts
from rag.eval.harness import evaluate_qa
from rag.eval.metrics import paired_difference
from rag.eval.report import write_results
from rag.eval.runner import stored_scores
from rag.selectors.base import write_demos
from rag.types import Demo

RESULTS = Path(__file__).resolve().parent / "results"
# The default qa_general chose (its summary's `default_pipeline` must still describe it).
DEFAULT = QAConfig(compression=None, order="relevance_first", splade=True)


def demo_pool(sets: dict[str, list[QAExample]], rest: dict[str, list[QAExample]]) -> list[Demo]:
    """The other dev questions, less any about an article a held question asks about."""
    held = {q.gold_doc for questions in sets.values() for q in questions}
    return [Demo(id=f"{name}:{q.id}", input=q.question, output=q.answers[0])
            for name, questions in rest.items() for q in questions if q.gold_doc not in held]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=150, help="per dev split")
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-qa"))
    args = parser.parse_args()
    chosen = json.loads((RESULTS / "qa_general.json").read_text())["summary"]["default_pipeline"]
    if DEFAULT.describe() != chosen:
        raise SystemExit(f"qa_general's default is now {chosen!r}: update DEFAULT")

    docs = vital_articles()
    splits = {"vital-qa": vital_qa_split("dev"), "vital-facts": vital_facts(docs, "dev")}
    sets = {name: questions[: args.questions] for name, questions in splits.items()}
    pool = demo_pool(sets, {name: questions[args.questions:] for name, questions in splits.items()})
    pool_path = write_demos(args.work / "qa-demo-pool.jsonl", pool)
    indexes = article_indexes(docs, args.work)  # built or reopened once, shared by both
    generator = {"type": "vllm", "model": "bench", "cpu_kv_cache_gib": 1}
    with_demos = f"{DEFAULT.name}-demos{args.shots}"
    pipelines = {DEFAULT.name: DEFAULT.pipeline(indexes, generator, args.max_tokens),
                 with_demos: DEFAULT.pipeline(indexes, generator, args.max_tokens,
                                              demos=pool_path, shots=args.shots)}
    out = RESULTS / "qa_demos"
    rows: list[dict[str, Any]] = []
    for name, questions in sets.items():
        stored = RESULTS / "qa_general" / "dev-final" / name / DEFAULT.name
        if not (out / name / DEFAULT.name).exists():
            shutil.copytree(stored, out / name / DEFAULT.name)
        scores = evaluate_qa(pipelines, questions, out / name, dataset=name)
        ids = [q.id for q in questions]
        a = stored_scores(out / name / with_demos, ids)
        b = stored_scores(out / name / DEFAULT.name, ids)
        diff, interval = paired_difference(a, b)
        rows.append({"set": name, "questions": len(ids),
                     "em_default": round(scores[DEFAULT.name]["em"], 4),
                     "em_with_demos": round(scores[with_demos]["em"], 4),
                     "demos_minus_default": diff, "paired_95": interval,
                     "won": sum(x > y for x, y in zip(a, b)),
                     "lost": sum(x < y for x, y in zip(a, b))})
    rows.append({"set": "mean", "questions": sum(r["questions"] for r in rows),
                 "em_default": round(sum(r["em_default"] for r in rows) / len(rows), 4),
                 "em_with_demos": round(sum(r["em_with_demos"] for r in rows) / len(rows), 4)})
    setup = {"default": DEFAULT.describe(), "demos": f"{args.shots} nearest by MiniLM (knn "
             "selector), shown as earlier question/answer exchanges, the nearest last",
             "questions": f"the first {args.questions} of each dev split (qa_general's dev final)",
             "pool": f"{len(pool)} other dev questions of both sets, none about a held article",
             "baseline": "the default's predictions from qa_general's dev final run (copied)",
             "generator": generator, "max_tokens": args.max_tokens}
    write_results("qa_demos", setup, {"dev": rows})


if __name__ == "__main__":
    main()
