"""Compare closed-book, naive RAG and the default pipeline on vital-article questions; write a
report with plots.

    python examples/evaluate.py               # 40 questions over 2,000 articles
    RAG_EXAMPLE_DOCS=400 python examples/evaluate.py

The same from the command line, with pipelines saved as YAML:

    rag eval --dataset vital-qa --limit 40 --out report \\
        --pipeline closed_book.yaml --pipeline naive_rag.yaml --pipeline best.yaml
"""

import os
import tempfile
from pathlib import Path

from rag.corpus import vital_articles
from rag.eval.datasets import vital_qa
from rag.eval.harness import evaluate_qa
from rag.recipes import best_qa, closed_book, index_corpus, naive_rag


def main() -> None:
    docs = vital_articles()[: int(os.environ.get("RAG_EXAMPLE_DOCS", "2000"))]
    examples = vital_qa(limit=int(os.environ.get("RAG_EXAMPLE_QUESTIONS", "40")), docs=docs)
    generator = {"type": "vllm", "model": "tiny"}
    with tempfile.TemporaryDirectory() as folder:
        index = index_corpus(docs, Path(folder) / "index")
        pipelines = {"closed-book": closed_book(generator, max_tokens=32),
                     "naive-rag": naive_rag(index, generator, k=3, max_tokens=32),
                     "best-qa": best_qa(index, generator, k=3, max_tokens=32)}
        out = Path(folder) / "report"
        summaries = evaluate_qa(pipelines, examples, out, dataset="vital-qa")
        for name, summary in summaries.items():
            print(f"{name}: F1 {summary['f1']:.3f}, accuracy {summary['acc']:.3f}, "
                  f"{summary['seconds_per_query']:.2f} s per question")
        print((out / "report.md").read_text())


if __name__ == "__main__":  # vLLM starts worker processes: keep engine start-up under main
    main()
