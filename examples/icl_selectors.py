"""In-context learning with chosen demonstrations, and a selector trained from LLM feedback.

1. Topic classification of Wikipedia extracts: a pipeline picks k demonstrations per text with
   a selector (BM25 here; random, kNN, MMR work the same) and builds a few-shot prompt.
2. EPR: the LLM scores BM25 candidates for a few training texts by log P(topic | candidate,
   text), a MiniLM bi-encoder learns from those scores, and the trained selector is reloaded
   from its folder like any component.

    python examples/icl_selectors.py
    RAG_EXAMPLE_QUESTIONS=24 python examples/icl_selectors.py   # fewer training anchors
"""

import os
import tempfile

from rag.eval.datasets import topic_template, vital_topics
from rag.generators.stage import Generate
from rag.pipeline import Pipeline
from rag.registry import build
from rag.selectors import load_selector, train_selector
from rag.selectors.stage import IclPrompt, Select
from rag.types import SamplingParams


def main() -> None:
    data = vital_topics(max_chars=200)
    pool, train, test = data[:1000], data[1000:1000 + int(os.environ.get("RAG_EXAMPLE_QUESTIONS", 40))], data[2000:2004]
    labels = sorted({d.output for d in data})
    template = topic_template(labels)
    generator = build("generator", {"type": "vllm", "model": "tiny"})

    pipeline = Pipeline([Select(build("selector", "bm25").fit(pool), k=4), IclPrompt(template=template),
                         Generate(generator, SamplingParams(max_tokens=6, stop=["\n"]))])
    for item, state in zip(test, pipeline.run([t.input for t in test])):
        print(f"{item.input[:60]!r}... -> {state.answer.text.strip()!r} (gold {item.output!r}); "
              f"demonstrations: {[d.output for d in state.demos]}")

    with tempfile.TemporaryDirectory() as work:
        trained = train_selector("epr", pool, train, generator, work, template=template, candidates=4,
                                 settings={"epochs": 2, "batch_size": 8})
        print(f"EPR: {trained.llm_scored} LLM scoring passes in {trained.scoring_seconds:.0f} s, "
              f"training {trained.training_seconds:.0f} s, loss per epoch {trained.report.losses}")
        epr = load_selector(work).fit(pool)
        for item, demos in zip(test, epr.select([t.input for t in test], 4)):
            print(f"{item.output:>28}: EPR picks {[d.output for d in demos]}")


if __name__ == "__main__":
    main()
