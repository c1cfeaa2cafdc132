"""Which model a newcomer's first answers come from: `tiny` against `bench` with the QA default.

`best_qa` (the QA default) in vLLM with each model, on the four questions `make demo` asks, over
the index `make demo` builds (`rag index vital-articles --limit 2000`), and on the first
`--questions` of vital-qa's dev split (a choice, so not its test split) over the 10,033 vital
articles' index as `rag index` builds it (BM25 + MiniLM + SPLADE-tiny, one chunk per article):
EM and accuracy (a gold answer inside the answer), each demo answer, and what the model costs to
install (the size of the PyPI packages that carry it, as installed). Each model runs in its own
process, one after the other.

    python benchmarks/demo_model.py [--questions 100] [--work .cache/bench-qa]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from rag.eval.qa import QAExample
from rag.eval.report import write_results
from rag.models import NAMED_MODELS

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("tiny", "bench")
# The Makefile's `make demo` questions, the answers a reader expects, and its index's size.
DEMO_ARTICLES = 2000
DEMO = {"Which 1968 film did Stanley Kubrick direct?": ["2001: A Space Odyssey"],
        "Who painted the Mona Lisa?": ["Leonardo da Vinci"],
        "Which bird is the largest living bird?": ["Ostrich", "Common ostrich"],
        "Who directed the film Jaws?": ["Steven Spielberg"]}


def installed_mb(model: str) -> float:
    """Megabytes the packages carrying a named model take once installed."""
    total = 0
    for package in NAMED_MODELS[model].packages:
        dist = importlib.metadata.distribution(package)
        total += sum(f.size or 0 for f in dist.files or [])
    return round(total / 2**20, 1)


def answer(model: str, questions: int, work: Path, out: Path) -> dict[str, Any]:
    """One model's demo answers and vital-qa scores (run in a fresh process)."""
    from rag.corpus import vital_articles
    from rag.eval.datasets import vital_qa_split
    from rag.eval.runner import run_qa, summarize_qa
    from rag.recipes import best_qa, document_chunks, hybrid_index, index_corpus
    from rag.registry import build

    generator = build("generator", {"type": "vllm", "model": model})  # one engine, both indexes
    docs = vital_articles()
    demo_index = index_corpus(docs[:DEMO_ARTICLES], work / f"demo-{DEMO_ARTICLES}")
    demo = [QAExample(id=f"demo-{i}", question=q, answers=golds)
            for i, (q, golds) in enumerate(DEMO.items())]
    asked = run_qa(best_qa(demo_index, generator), demo, out / model / "demo", progress=False)
    full = hybrid_index(document_chunks(docs), out=work / "vital-hybrid-splade", splade=True)
    dev = vital_qa_split("dev", questions)
    scored = summarize_qa(dev, run_qa(best_qa(full, generator), dev, out / model / "vital-qa"))
    # A pool worker joins its children at exit, and skips atexit: stop the engine first.
    generator.close()
    for left in psutil.Process().children(recursive=True):
        left.kill()
    return {"model": model, "described": NAMED_MODELS[model].description,
            "installed MB": installed_mb(model),
            "demo correct": sum(int(p.scores["acc"]) for p in asked),
            "vital-qa dev EM": round(scored["em"], 4), "vital-qa dev acc": round(scored["acc"], 4),
            "demo answers": {p.id: p.answer for p in asked}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-qa"),
                        help="holds vital-hybrid-splade, the index the QA benchmarks build")
    parser.add_argument("--out", type=Path, default=RESULTS / "demo_model")
    args = parser.parse_args()
    rows = []
    for model in MODELS:  # a process each, so one engine's memory is gone before the next
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(answer, model, args.questions, args.work.resolve(),
                                    args.out.resolve()).result())
    by = {r["model"]: r for r in rows}
    summary = {**{f"demo_correct_{m}": by[m]["demo correct"] for m in MODELS},
               **{f"vitalqa_dev_em_{m}": by[m]["vital-qa dev EM"] for m in MODELS},
               **{f"installed_mb_{m}": by[m]["installed MB"] for m in MODELS},
               "demo_questions": len(DEMO), "vitalqa_questions": args.questions}
    setup = {"pipeline": "best_qa (the QA default at the run's commit), 64 tokens, vLLM, greedy",
             "demo": f"the four questions of `make demo` over its index (the first "
                     f"{DEMO_ARTICLES} vital articles, as `rag index` builds it); correct: a gold "
                     "answer inside the answer",
             "vital-qa": f"the first {args.questions} questions of the dev split, over the "
                         "10,033 articles (BM25 + MiniLM + SPLADE-tiny)"}
    write_results("demo_model", setup, rows, summary=summary)


if __name__ == "__main__":
    main()
