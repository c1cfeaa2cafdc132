"""Prompt compression on real data: QA accuracy with and without compression, as pipelines.

vital-qa questions (description -> title, seed 0), the top 5 articles of the saved hybrid index,
short-answer instructions; each configuration is the pipeline `retrieve -> [compress] ->
rag_prompt -> generate`, run through `rag.eval.evaluate_qa`: exact match, F1, accuracy, prompt
tokens and compression seconds per question, without compression and with each compressor at 2x
and 4x. (The code-context rows of `results/compression.json` come from an earlier run, kept with
their own commit; code-context compression is covered by `tests/test_compression.py`.)

`--part ranking` chooses the LLMLingua-style compressor's token ranking on dev splits:
self-information (`contrastive: false`) against LongLLMLingua's contrastive perplexity (the
default since this check), both at 2x, on the dev questions of vital-qa and of vital-facts,
with the QA default's passages (hybrid, reciprocal rank, top 3, best first), answered by
`bench`; the ranking with the better mean EM over the two sets wins, with a paired 95% interval
per set.

    python benchmarks/compression.py [--questions 100] [--model tiny] [--part qa|ranking]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rag.compression.stage import Compress
from rag.corpus import vital_articles
from rag.eval.datasets import vital_qa, vital_qa_split
from rag.eval.facts import vital_facts
from rag.eval.harness import evaluate_qa
from rag.eval.metrics import paired_difference
from rag.eval.report import write_results
from rag.eval.runner import stored_scores
from rag.generators.stage import Generate
from rag.pipeline import Pipeline
from rag.prompts import SHORT_RAG_SYSTEM, RagPrompt
from rag.recipes import document_chunks, hybrid_index, rag_qa
from rag.retrievers.stage import Retrieve
from rag.types import SamplingParams

RESULTS = Path(__file__).resolve().parent / "results"


def compressors(model: str) -> dict[str, dict[str, Any] | None]:
    kinds = {"extractive": {"type": "extractive"},
             f"llmlingua ({model})": {"type": "llmlingua", "generator": {"type": "vllm", "model": model}}}
    return {"no compression": None,
            **{f"{name} {ratio:g}x": {**spec, "ratio": ratio} for name, spec in kinds.items()
               for ratio in (2.0, 4.0)}}


RANKINGS = {"self-information": False, "contrastive perplexity (the default)": True}


def ranking(args: argparse.Namespace) -> None:
    """The LLMLingua-style token ranking, chosen on both dev splits (see the module doc)."""
    docs = vital_articles()
    hybrid = hybrid_index(document_chunks(docs), out=args.work / "vital-hybrid")
    sets = {"vital-qa": vital_qa_split("dev", args.questions),
            "vital-facts": vital_facts(docs, "dev")[: args.questions]}
    pipelines = {name: rag_qa(hybrid, {"type": "vllm", "model": "bench"}, k=3, compression=2.0,
                              compressor={"type": "llmlingua", "contrastive": contrastive},
                              fusion="rrf", order="relevance_first", max_tokens=64)
                 for name, contrastive in RANKINGS.items()}
    rows = []
    for label, examples in sets.items():
        folder = RESULTS / "compression" / "ranking" / label
        summaries = evaluate_qa(pipelines, examples, folder, dataset=label)
        ids = [e.id for e in examples]
        _, interval = paired_difference(*(stored_scores(folder / name, ids)
                                          for name in summaries))
        for name, s in summaries.items():
            rows.append({"set": label, "ranking": name, "questions": s["examples"],
                         "em": round(s["em"], 4), "prompt_tokens": round(s["prompt_tokens"], 1),
                         "compress_s_per_q": round(s["stage_seconds"].get("compress", 0.0), 4),
                         "self_information_minus_contrastive_95": interval})
    setup = {"ranking": f"first {args.questions} dev questions of vital-qa and of vital-facts, "
                        "hybrid rrf top 3, best first, llmlingua (tiny) 2x, bench, 64 tokens"}
    write_results("compression", setup, {"ranking": rows}, keep_other_sections=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--model", default="tiny", help="generator (and LLMLingua's scorer)")
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-end-to-end"),
                        help="where the saved hybrid index lives (shared with end_to_end.py)")
    parser.add_argument("--part", choices=("qa", "ranking"), default="qa")
    args = parser.parse_args()
    if args.part == "ranking":
        ranking(args)
        return
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
