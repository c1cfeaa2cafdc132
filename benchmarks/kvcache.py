"""KV-cache precomputation: time to first token, answer quality, vLLM prefix caching, bytes.

1. TTFT: 4, 8 and 16 chunks of 200 tokens (vital articles cut at 200 model tokens) and a
   question; full prefill vs reuse vs reuse + 15% recompute (CacheBlend), side by side in one
   run, median of the trials; transformers on CPU, float32; chunk caches stored in float16.
2. Quality: vital-qa questions (description -> title), the hybrid retriever's top 4 articles
   as chunks, greedy answers (16 tokens) by full prefill, reuse, and reuse + recompute at each
   of `--fractions` (default 15%): exact match, accuracy (title contained) and agreement of
   each answer with the full-prefill answer (after the standard answer normalization). One
   more full prefill with the two least relevant passages swapped measures how often this
   model's greedy answer changes under an edit that should not matter: the noise floor of
   agreement.
3. vLLM prefix caching: a fixed 8-demonstration prefix (topic classification), time to first
   token of requests sent one at a time, cold (prefix never seen) vs warm (after `warm_prefix`).
4. Bytes of KV stored per 1,000 chunks (float16), from the stores built above.

    python benchmarks/kvcache.py [--model bench] [--quality-model tiny] [--questions 200]
                                 [--fractions 0.15 0.3 0.5] [--skip ttft prefix]

A part skipped keeps its rows from the last run that made them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median

import numpy as np
from tqdm.auto import tqdm

from rag.corpus import vital_articles
from rag.eval.datasets import vital_qa, vital_topics
from rag.eval.metrics import qa_scores
from rag.eval.report import write_results
from rag.kvcache import ChunkKV, ChunkKVStore
from rag.kvcache.prefix import warm_prefix
from rag.prompts import SHORT_RAG_SYSTEM
from rag.recipes import document_chunks, hybrid_index
from rag.registry import build
from rag.selectors import DemoTemplate
from rag.text import normalize_answer
from rag.types import Chunk, SamplingParams

SYSTEM = SHORT_RAG_SYSTEM


def modes(fractions: list[float]) -> list[tuple[str, str, float]]:
    """Full prefill, pure reuse, and reuse with each recompute fraction asked for."""
    return [("full", "full", 0.0), ("reuse", "reuse", 0.0),
            *((f"reuse + {f:.0%} recompute", "recompute", f) for f in fractions)]


MODES = modes([0.15])  # the time-to-first-token comparison the issue asks for
SWAPPED = "full prefill, 2 least relevant passages swapped"


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - began


def store_size(model: str, store: ChunkKVStore, build_s: float) -> dict:
    return {"model": model, "chunks": len(store.chunks), "bytes": store.nbytes,
            "bytes per 1000 chunks": round(store.nbytes / len(store.chunks) * 1000),
            "tokens per chunk": round(np.mean([len(c["ids"]) for c in store.chunks.values()]), 1),
            "build seconds": round(build_s, 1)}


def ttft(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict]:
    generator = build("generator", {"type": "transformers", "model": args.model})
    tokenizer = generator.tokenizer
    long = [d for d in vital_articles() if len(tokenizer.encode(d.text)) >= 200]
    chunks = []
    for d in long[: args.trials * max(args.sizes)]:
        text = tokenizer.decode(tokenizer.encode(d.text, add_special_tokens=False)[:200])
        chunks.append(Chunk(id=d.id, doc_id=d.id, text=text, start=0, end=len(text), title=d.title))
    kv = ChunkKV(generator, work / f"ttft-{args.model}", SYSTEM, dtype="float16")
    store, build_s = timed(kv.build, chunks)
    kv.prefill("warm-up?", chunks[:2], "full"), kv.prefill("warm-up?", chunks[:2], "recompute")
    rows = []
    for size in args.sizes:
        seconds: dict[str, list[float]] = {name: [] for name, _, _ in MODES}
        for trial in range(args.trials):
            picked = chunks[trial * size : (trial + 1) * size]
            for name, mode, fraction in MODES:
                seconds[name].append(timed(kv.prefill, "What is this about?", picked, mode, fraction)[1])
        full = median(seconds["full"])
        rows.append({"chunks": size, "prompt tokens": len(kv.layout("What is this about?", picked).ids),
                     **{f"{n} ms": round(1000 * median(s), 1) for n, s in seconds.items()},
                     **{f"{n} speed-up": round(full / median(s), 2) for n, s in seconds.items() if n != "full"}})
        print(rows[-1], flush=True)
    return rows, store_size(args.model, store, build_s)


def quality(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict]:
    examples = vital_qa(args.questions)
    hybrid = hybrid_index(document_chunks(vital_articles()), out=Path(".cache/bench-end-to-end/vital-hybrid"))
    retrieved = hybrid.search([e.question for e in examples], k=4)
    generator = build("generator", {"type": "transformers", "model": args.quality_model})
    kv = ChunkKV(generator, work / f"quality-{args.quality_model}", SYSTEM, dtype="float16")
    unique = {h.chunk.id: h.chunk for hits in retrieved for h in hits}
    store, build_s = timed(kv.build, list(unique.values()))
    params = SamplingParams(max_tokens=16)
    runs = [*((*m, False) for m in modes(args.fractions)), (SWAPPED, "full", 0.0, True)]
    answers: dict[str, list[str]] = {name: [] for name, *_ in runs}
    seconds: dict[str, float] = {name: 0.0 for name, *_ in runs}
    for example, hits in tqdm(zip(examples, retrieved), total=len(examples), desc="questions"):
        chunks = [h.chunk for h in hits[::-1]]  # best last, as rag_prompt does
        swapped = [chunks[1], chunks[0], *chunks[2:]]
        for name, mode, fraction, swap in runs:
            (prefilled, layout), s = timed(kv.prefill, example.question,
                                           swapped if swap else chunks, mode, fraction)
            answers[name].append(kv.decode(prefilled, layout, params).text.strip())
            seconds[name] += s
    rows = []
    for name, texts in answers.items():
        scores = [qa_scores(t, e.answers) for t, e in zip(texts, examples)]
        rows.append({"mode": name, "questions": len(examples),
                     "em": round(float(np.mean([s["em"] for s in scores])), 4),
                     "acc": round(float(np.mean([s["acc"] for s in scores])), 4),
                     "agreement with full": round(float(np.mean(
                         [normalize_answer(a) == normalize_answer(b)
                          for a, b in zip(texts, answers["full"])])), 4),
                     "prefill ms/question": round(1000 * seconds[name] / len(examples), 1)})
        print(rows[-1], flush=True)
    return rows, store_size(args.quality_model, store, build_s)


def prefix_caching(args: argparse.Namespace) -> list[dict]:
    generator = build("generator", {"type": "vllm", "model": args.model})
    data = vital_topics(max_chars=300)
    demos, queries = data[:8], data[8 : 8 + args.prefix_queries]
    template = DemoTemplate(instruction="Classify the topic of each text.", input_prefix="Text: ",
                            output_prefix="\nTopic:")
    one = SamplingParams(max_tokens=1)
    generator.generate(["warm-up"], one)
    cold, warm, cached = [], [], []
    for q in queries:  # a fresh first line: no block of this prompt was ever cached
        prompt = f"Request {uuid.uuid4()}.\n" + template.plain(demos, q.input)
        cold.append(timed(generator.generate, [prompt], one)[1])
    prompts = [template.plain(demos, q.input) for q in queries]
    warm_usage = warm_prefix(generator, prompts)
    for prompt in prompts:
        (out,), s = timed(generator.generate, [prompt], one)
        warm.append(s)
        cached.append(out.usage.cached_prompt_tokens)
    tokens = np.mean([len(generator.prompt_ids(p)) for p in prompts])
    return [{"model": args.model, "requests": len(queries), "prompt tokens": round(float(tokens), 1),
             "shared prefix tokens": warm_usage.prompt_tokens,
             "cold TTFT ms": round(1000 * median(cold), 1), "warm TTFT ms": round(1000 * median(warm), 1),
             "speed-up": round(median(cold) / median(warm), 2),
             "cached prompt tokens (mean)": round(float(np.mean(cached)), 1)}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bench", help="TTFT and prefix-caching model")
    parser.add_argument("--quality-model", default="tiny")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--prefix-queries", type=int, default=20)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.15],
                        help="quality: recompute fractions compared with full prefill and reuse")
    parser.add_argument("--skip", nargs="+", default=[], choices=["ttft", "quality", "prefix"],
                        help="parts not to run; their rows stay from an earlier run")
    parser.add_argument("--work", default=None, help="folder for the KV stores (default: temp)")
    args = parser.parse_args()
    setup = {"ttft": f"{args.model}, transformers float32 on CPU, chunks of 200 tokens, "
                     f"median of {args.trials} trials, question 'What is this about?'",
             "quality": f"{args.questions} vital-qa questions, hybrid top 4, {args.quality_model}, "
                        f"greedy, 16 tokens; system prompt: {SYSTEM}",
             "prefix caching (vLLM)": f"{args.model}, 8 topic demonstrations, {args.prefix_queries} requests"}
    sections = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        if "ttft" not in args.skip:
            sections["ttft"], store = ttft(args, work)
            sections["kv bytes"] = [store]
        if "quality" not in args.skip:
            sections["quality"], store = quality(args, work)
            sections["kv bytes (quality store)"] = [store]
    if "prefix" not in args.skip:
        sections["prefix caching (vLLM)"] = prefix_caching(args)
    write_results("kvcache", {n: setup[n] for n in sections if n in setup}, sections,
                  keep_other_sections=True)


if __name__ == "__main__":
    main()
