"""Demonstration selectors on topic classification by in-context learning (vital articles).

Input = an article's extract (first ~300 characters, cut at a word), label = its topic (11
labels; `Uncategorized` left out). Fixed seed; a pool, an LLM-feedback training set and a test
set, disjoint. The prediction is the label whose first token the LLM finds most likely after
the prompt (one forward pass per test item). Learned selectors are trained on the same LLM's
feedback over BM25-mined candidates; their scoring cost and training time are reported.

    python benchmarks/selectors.py [--model tiny] [--pool 3000] [--train 1000] [--test 500]
"""

from __future__ import annotations

import sys

if __name__ == "selectors":
    # Scripts in benchmarks/ run with this folder first on sys.path, where this file's name
    # shadows the standard library's `selectors` (imported by socket and asyncio): hand the
    # real module over. Only the standard library is imported at module level below.
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location(
        __name__, f"{sysconfig.get_path('stdlib')}/selectors.py")
    sys.modules[__name__] = _stdlib = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_stdlib)  # type: ignore[union-attr]
else:  # run as a script: drop this folder from the path before importing anything else
    import os

    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

UNSUPERVISED: dict[str, dict[str, Any]] = {
    "random": {"type": "random", "seed": 0},
    "bm25": {"type": "bm25"},
    "knn": {"type": "knn"},
    "mmr": {"type": "mmr", "relevance_weight": 0.7},
}
LEARNED = ("epr", "llm-r", "se2")


def accuracy(generator: Any, template: DemoTemplate, labels: list[str], test: list[Demo],
             demos: list[list[Demo]], order: str) -> float:
    import numpy as np

    from rag.selectors.prompt import ordered, predict_labels
    from rag.types import Prompt

    prompts = [Prompt(text=template.plain(ordered(d, order), t.input))  # type: ignore[arg-type]
               for t, d in zip(test, demos)]
    predicted = predict_labels(lambda options: generator.next_token_logprobs(prompts, options),
                               template, labels)
    return float(np.mean([p == t.output for p, t in zip(predicted, test)]))


def main() -> None:
    from rag.eval.datasets import topic_template, vital_topics
    from rag.eval.report import write_results
    from rag.registry import build
    from rag.selectors import Selector, load_selector, train_selector

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--candidates", type=int, default=10, help="BM25-mined per anchor")
    parser.add_argument("--se2-anchors", type=int, default=None, help="Se² anchors (default all)")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", default=".cache/bench-selectors", help="scores and models")
    args = parser.parse_args()

    data = vital_topics(max_chars=300, seed=0)
    pool, train = data[: args.pool], data[args.pool : args.pool + args.train]
    test = data[4000 : 4000 + args.test]  # disjoint from pool and train for pool + train <= 4000
    if args.pool + args.train > 4000:
        parser.error("pool + train must be at most 4000 (the test set starts there)")
    labels = sorted({d.output for d in data})
    template = topic_template(labels)
    generator = build("generator", {"type": "vllm", "model": args.model})
    work = Path(args.work) / args.model
    selectors: dict[str, Selector] = {n: build("selector", s).fit(pool) for n, s in UNSUPERVISED.items()}
    training = []
    for method in LEARNED:
        anchors = train[: args.se2_anchors] if method == "se2" else train
        began = time.perf_counter()
        trained = train_selector(
            method, pool, anchors, generator, work / method, template=template,
            candidates=args.candidates, settings={"epochs": args.epochs},
            scores_cache=work / "llm_scores.jsonl",
        )
        selectors[method] = load_selector(work / method).fit(pool)
        training.append({"method": method, "anchors": trained.anchors,
                         "new LLM passes": trained.llm_scored,
                         "scoring s": trained.scoring_seconds, "training s": trained.training_seconds,
                         "total s": round(time.perf_counter() - began, 1),
                         "loss first/last epoch": f"{trained.report.losses[0]:.3f} / "
                                                  f"{trained.report.losses[-1]:.3f}"})
        print(training[-1], flush=True)

    rows = [{"selector": "zero-shot", "k": 0,
             "accuracy": round(accuracy(generator, template, labels, test, [[] for _ in test],
                                        "as_given"), 4), "select ms/query": 0.0}]
    print(rows[-1], flush=True)
    for k in args.ks:
        for name, selector in selectors.items():
            began = time.perf_counter()
            demos = selector.select([t.input for t in test], k)
            select_s = time.perf_counter() - began
            order = "as_given" if name == "se2" else "similar_last"
            rows.append({"selector": name, "k": k,
                         "accuracy": round(accuracy(generator, template, labels, test, demos, order), 4),
                         "select ms/query": round(1000 * select_s / len(test), 2)})
            print(rows[-1], flush=True)
    setup = {"model": args.model, "pool": len(pool), "train anchors": len(train),
             "test": len(test), "labels": len(labels), "candidates per anchor": args.candidates,
             "input": "extract, first 300 characters", "epochs": args.epochs,
             "se2 anchors": len(train[: args.se2_anchors])}
    write_results("selectors", setup, {"accuracy": rows, "training": training})


if __name__ == "__main__":
    main()
