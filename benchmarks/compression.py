"""Prompt compression on real data: QA accuracy and code pass@1 with and without compression.

1. QA: vital-qa questions (description -> title, seed 0), the top 5 articles of the hybrid
   retriever, short-answer instructions; exact match, F1, accuracy, prompt tokens and seconds of
   compression per question, without compression and with each compressor at 2x and 4x.
2. Code: the first N HumanEval problems, each with the 2 most similar other problems (MiniLM over
   the prompts, the problem itself left out) and their solutions as context, CodeRAG-Bench style;
   greedy pass@1 without context, with it, and with it code-compressed 2x.

    python benchmarks/compression.py [--questions 100] [--model tiny] [--code-problems 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rag.compression.stage import Compress
from rag.corpus import vital_articles
from rag.eval.datasets import humaneval, vital_qa
from rag.eval.metrics import qa_scores
from rag.eval.report import write_results
from rag.generators.stage import Generate
from rag.pipeline import Pipeline
from rag.prompts import RagPrompt
from rag.recipes import document_chunks, hybrid_index
from rag.registry import build
from rag.retrievers.stage import Retrieve
from rag.types import Chunk, Hit, Prompt, SamplingParams
from rag.verifiers import Sandbox, program_for, run_unit_tests
from rag.verifiers.code import solve_prompt

SYSTEM = "Answer the question using the numbered passages. Give only the answer (a name), no other words."
COMPRESSORS = {
    "extractive": {"type": "extractive"},
    "llmlingua (tiny)": {"type": "llmlingua", "generator": {"type": "vllm", "model": "tiny"}},
}
CODE_PROMPT = "{context}\n\nPlease complete the following function based on the example above:\n```python\n{prompt}```"


def qa(args: argparse.Namespace) -> list[dict]:
    examples = vital_qa(args.questions)
    _, _, hybrid = hybrid_index(document_chunks(vital_articles()))
    generator = build("generator", {"type": "vllm", "model": args.model})
    configs = {"no compression": None, **{f"{n} {r:g}x": {**spec, "ratio": r}
                                          for n, spec in COMPRESSORS.items() for r in (2.0, 4.0)}}
    rows = []
    for name, spec in configs.items():
        stages = [Compress(spec)] if spec else []
        pipeline = Pipeline([Retrieve(hybrid, k=5), *stages, RagPrompt(system=SYSTEM),
                             Generate(generator, SamplingParams(max_tokens=32))])
        answered = pipeline.run([e.question for e in examples], progress=True)
        scores = [qa_scores(s.answer.text, e.answers) for s, e in zip(answered, examples)]
        compress_s = sum(t.seconds / t.batch_size for s in answered for t in s.trace if t.stage == "compress")
        ratios = [t.info["ratio"] for s in answered for t in s.trace if t.stage == "compress"]
        rows.append({
            "configuration": name, "questions": len(examples),
            "em": round(float(np.mean([s["em"] for s in scores])), 4),
            "f1": round(float(np.mean([s["f1"] for s in scores])), 4),
            "acc": round(float(np.mean([s["acc"] for s in scores])), 4),
            "prompt_tokens": round(float(np.mean([s.answer.usage.prompt_tokens for s in answered])), 1),
            "achieved_ratio": round(float(np.mean(ratios)), 3) if ratios else 1.0,
            "compress_s_per_q": round(compress_s / len(examples), 4),
        })
        print(rows[-1], flush=True)
    return rows


def code(args: argparse.Namespace) -> list[dict]:
    everything = humaneval()
    tasks = everything[: args.code_problems]
    encoder = build("encoder", {"type": "sentence_transformers"})
    vectors = encoder.encode_documents([t.prompt for t in everything])
    generator = build("generator", {"type": "vllm", "model": args.code_model, "max_model_len": 4096})
    compressor = build("compressor", {"type": "code", "ratio": 2.0})
    sandbox = Sandbox()
    contexts, kept = [], []
    for i, task in enumerate(tasks):
        similar = [j for j in np.argsort(-(vectors @ vectors[i])) if j != i][:2]
        docs = [everything[j].prompt + everything[j].canonical_solution for j in similar]
        contexts.append("\n".join(docs))
        hits = [[Hit(chunk=Chunk(id=str(j), doc_id=str(j), text=d, start=0, end=len(d)), score=1.0,
                     retriever="knn") for j, d in zip(similar, docs)]]
        result = compressor.compress([task.prompt], hits)[0]
        kept.append(("\n".join(h.chunk.text for h in result.hits), result.ratio))
    variants = {
        "no context": [solve_prompt(t.prompt) for t in tasks],
        "2 similar solved problems": [Prompt.chat(CODE_PROMPT.format(context=c, prompt=t.prompt))
                                      for c, t in zip(contexts, tasks)],
        "same, code-compressed 2x": [Prompt.chat(CODE_PROMPT.format(context=k, prompt=t.prompt))
                                     for (k, _), t in zip(kept, tasks)],
    }
    rows = []
    for name, prompts in variants.items():
        began = time.perf_counter()
        replies = generator.generate(prompts, SamplingParams(max_tokens=384))
        passed = [run_unit_tests(sandbox, [program_for(t.prompt, r.text, t.entry_point)], t.test, t.entry_point)[0].passed
                  for t, r in zip(tasks, replies)]
        rows.append({"configuration": name, "problems": len(tasks),
                     "pass@1": round(sum(passed) / len(tasks), 4),
                     "prompt_tokens": round(float(np.mean([r.usage.prompt_tokens for r in replies])), 1),
                     "achieved_ratio": round(float(np.mean([r for _, r in kept])), 3) if "compressed" in name else 1.0,
                     "seconds": round(time.perf_counter() - began, 1)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--model", default="tiny", help="QA generator")
    parser.add_argument("--code-problems", type=int, default=20)
    parser.add_argument("--code-model", default="bench")
    parser.add_argument("--skip", choices=["qa", "code"], default=None)
    args = parser.parse_args()
    setup = {"qa": f"first {args.questions} vital-qa questions (seed 0), hybrid top 5, {args.model}, "
                   "short-answer instructions, 32 new tokens",
             "code": f"first {args.code_problems} HumanEval problems, {args.code_model}, greedy, "
                     "context = 2 nearest other problems with solutions (MiniLM over prompts)"}
    sections = {}
    for name, part in (("code", code), ("qa", qa)):
        if args.skip != name:
            sections[name] = part(args)
            # after each part; a part skipped keeps its rows and setup from an earlier run
            write_results("compression", {n: setup[n] for n in sections}, sections, keep_other_sections=True)


if __name__ == "__main__":
    main()
