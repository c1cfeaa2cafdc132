"""End-to-end QA: closed-book against RAG pipelines on vital-article questions, one report.

Questions are "What is the name of the <Wikidata description>?" with the article title as the
gold answer (`rag.eval.datasets.vital_qa`, seed 0), over all 10,033 articles, one chunk each.
Pipelines: closed-book; naive RAG (dense HNSW, k=3); hybrid RAG (BM25 + dense, convex, BM25
weight 0.3, k=3); hybrid top 20 reranked by a LLM reranker to 3; hybrid k=3 with its passages
compressed 2x (extractive). The instructions ask for the
answer alone, as FlashRAG's do, so exact match measures the answer rather than its phrasing. The report with plots goes to
benchmarks/results/end_to_end/ and the summary table to benchmarks/results/end_to_end.json.

    python benchmarks/end_to_end.py [--questions 100] [--model bench] [--reranker llm-pointwise]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rag.compression.stage import Compress
from rag.corpus import vital_articles
from rag.eval.datasets import vital_qa
from rag.eval.harness import QA_COLUMNS, evaluate_qa
from rag.eval.report import write_results
from rag.generators.stage import Generate
from rag.pipeline import Pipeline
from rag.prompts import ClosedBookPrompt, RagPrompt
from rag.registry import build
from rag.rerankers.stage import Rerank
from rag.recipes import document_chunks, hybrid_index
from rag.retrievers.stage import Retrieve
from rag.types import SamplingParams

RESULTS = Path(__file__).resolve().parent / "results"
# FlashRAG-style short-answer instructions, so exact match measures the answer, not its phrasing.
SHORT = "Give only the answer (a name), no other words."
RAG_SYSTEM = f"Answer the question using the numbered passages. {SHORT}"
CLOSED_BOOK_SYSTEM = f"Answer the question. {SHORT}"


def pipelines(args: argparse.Namespace) -> dict[str, Pipeline]:
    dense, _, hybrid = hybrid_index(document_chunks(vital_articles()))
    generator = build("generator", {"type": "vllm", "model": args.model, "max_model_len": 4096})
    params = SamplingParams(max_tokens=args.max_tokens)
    answer = [RagPrompt(system=RAG_SYSTEM), Generate(generator, params)]
    reranker = {"type": args.reranker, "generator": generator.spec(), "max_words": 60}
    return {
        "closed-book": Pipeline([ClosedBookPrompt(system=CLOSED_BOOK_SYSTEM), Generate(generator, params)]),
        "naive-rag-dense-k3": Pipeline([Retrieve(dense, k=3), *answer]),
        "hybrid-rag-k3": Pipeline([Retrieve(hybrid, k=3), *answer]),
        f"hybrid-top20-{args.reranker}-k3": Pipeline(
            [Retrieve(hybrid, k=20), Rerank(reranker, k=3), *answer]),
        "hybrid-k3-extractive-2x": Pipeline(
            [Retrieve(hybrid, k=3), Compress({"type": "extractive", "ratio": 2.0}), *answer]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--reranker", default="llm-pointwise")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS / "end_to_end", help="report folder")
    args = parser.parse_args()
    examples = vital_qa(args.questions)
    summaries = evaluate_qa(pipelines(args), examples, args.out, dataset="vital-qa")
    rows = [{"configuration": name, **{c: round(s[c], 4) for c in QA_COLUMNS}}
            for name, s in summaries.items()]
    setup = {"questions": f"first {len(examples)} vital-qa questions (seed 0)", "model": args.model,
             "corpus": "10,033 vital-article summaries, one chunk each", "max_tokens": args.max_tokens,
             "instructions": {"rag": RAG_SYSTEM, "closed_book": CLOSED_BOOK_SYSTEM},
             "report": "benchmarks/results/end_to_end/report.md"}
    write_results("end_to_end", setup, {"qa": rows})


if __name__ == "__main__":
    main()
