"""vLLM vs transformers: throughput for one batch of 32 chats with the `tiny` model, one run.

    python benchmarks/generation.py [--chats 32] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import time

from rag.corpus import vital_articles
from rag.eval.report import write_results
from rag.registry import build
from rag.types import Prompt, SamplingParams


def measure(generator, prompts, params) -> dict:
    generator.generate(prompts[:2], SamplingParams(max_tokens=4))  # warm-up: load / start engine
    began = time.perf_counter()
    outputs = generator.generate(prompts, params)
    seconds = time.perf_counter() - began
    tokens = sum(o.usage.completion_tokens for o in outputs)
    return {"generated_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "texts": [o.text for o in outputs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chats", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    titles = [d.title for d in vital_articles()[:: 10_000 // args.chats]][: args.chats]
    prompts = [Prompt.chat(f"Tell me about {t} in three sentences.") for t in titles]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    backends = {
        "vllm": {"type": "vllm", "model": "tiny"},
        "transformers": {"type": "transformers", "model": "tiny", "batch_size": args.chats},
    }
    measured = {name: measure(build("generator", spec), prompts, params)
                for name, spec in backends.items()}
    same = sum(a == b for a, b in zip(measured["vllm"]["texts"], measured["transformers"]["texts"]))
    baseline = measured["transformers"]["tokens_per_s"]
    rows = [
        {"backend": name, "generated_tokens": m["generated_tokens"], "seconds": m["seconds"],
         "tokens_per_s": m["tokens_per_s"], "speedup_vs_transformers": round(m["tokens_per_s"] / baseline, 2)}
        for name, m in measured.items()
    ]
    write_results("generation", {
        "model": "tiny (SmolLM2-135M-Instruct, float32)", "chats": args.chats,
        "max_tokens": args.max_tokens, "decoding": "greedy", "threads": os.cpu_count(),
        "identical_greedy_outputs": f"{same}/{args.chats}",
    }, rows)


if __name__ == "__main__":
    main()
