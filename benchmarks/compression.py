"""Prompt compression on real data: QA accuracy with and without compression, as pipelines.

vital-qa questions (description -> title, seed 0), the top 5 articles of the saved hybrid index,
short-answer instructions; each configuration is the pipeline `retrieve -> [compress] ->
rag_prompt -> generate`, run through `rag.eval.evaluate_qa`: exact match, F1, accuracy, prompt
tokens and compression seconds per question, without compression and with each compressor at 2x
and 4x. (The code-context rows of `results/compression.json` come from an earlier run, kept with
their own commit; code-context compression is covered by `tests/test_compression.py`.)

    python benchmarks/compression.py [--questions 100] [--model tiny]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rag.compression.stage import Compress
from rag.corpus import vital_articles
from rag.eval.datasets import vital_qa
from rag.eval.harness import evaluate_qa
from rag.eval.report import write_results
from rag.generators.stage import Generate
from rag.pipeline import Pipeline
from rag.prompts import SHORT_RAG_SYSTEM, RagPrompt
from rag.recipes import document_chunks, hybrid_index
from rag.retrievers.stage import Retrieve
from rag.types import SamplingParams

RESULTS = Path(__file__).resolve().parent / "results"


def compressors(model: str) -> dict[str, dict[str, Any] | None]:
    kinds = {"extractive": {"type": "extractive"},
             f"llmlingua ({model})": {"type": "llmlingua", "generator": {"type": "vllm", "model": model}}}
    return {"no compression": None,
            **{f"{name} {ratio:g}x": {**spec, "ratio": ratio} for name, spec in kinds.items()
               for ratio in (2.0, 4.0)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--model", default="tiny", help="generator (and LLMLingua's scorer)")
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-end-to-end"),
                        help="where the saved hybrid index lives (shared with end_to_end.py)")
    args = parser.parse_args()
    hybrid = hybrid_index(document_chunks(vital_articles()), out=args.work / "vital-hybrid")
    generate = Generate({"type": "vllm", "model": args.model}, SamplingParams(max_tokens=32))
    pipelines = {
        name: Pipeline([Retrieve(hybrid, k=5), *([Compress(spec)] if spec else []),
                        RagPrompt(system=SHORT_RAG_SYSTEM), generate])
        for name, spec in compressors(args.model).items()
    }
    summaries = evaluate_qa(pipelines, vital_qa(args.questions), RESULTS / "compression" / "qa",
                            dataset="vital-qa")
    rows = [{"configuration": name, "questions": s["examples"], "em": round(s["em"], 4),
             "f1": round(s["f1"], 4), "acc": round(s["acc"], 4),
             "prompt_tokens": round(s["prompt_tokens"], 1),
             "compress_s_per_q": round(s["stage_seconds"].get("compress", 0.0), 4)}
            for name, s in summaries.items()]
    setup = {"qa": f"first {args.questions} vital-qa questions (seed 0), hybrid top 5, {args.model}, "
                   "short-answer instructions, 32 new tokens"}
    write_results("compression", setup, {"qa": rows}, keep_other_sections=True)


if __name__ == "__main__":
    main()
