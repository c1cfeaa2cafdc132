"""Reuse precomputed KV caches of retrieved chunks, and warm vLLM's prefix cache.

1. Index time: each article runs once through the model after the fixed system prefix, and its
   keys and values are stored (safetensors). Query time: the retrieved chunks' caches are
   re-rotated to their place in the prompt and only the question is prefilled; `recompute`
   also recomputes 15% of chunk tokens (CacheBlend). The three modes answer side by side.
2. The same store inside vLLM: `kv_generate` with a vllm generator, whose KV connector loads the
   chunks' caches into the engine's blocks; vLLM prefills only the question.
3. Demonstration KV: every pool demonstration's cache stored once, situated (encoded after its
   nearest pool neighbours); `select -> kv_icl_generate` in vLLM loads the 8 demonstrations a
   kNN selector picks instead of prefilling them, against full prefill of the same prompts
   (12 texts and a pool of 64 show the mechanism; docs/benchmarks.md has the measurement).
4. vLLM prefix caching: put the fixed part of the prompt first, warm it once, and read how many
   prompt tokens each request found in the prefix cache.

    python examples/kv_reuse.py
"""

import os
import tempfile

from rag.corpus import vital_articles
from rag.eval.datasets import topic_template, vital_topics
from rag.kvcache import ChunkKV
from rag.kvcache.demos import demo_chunks, demo_frame, situated_context
from rag.kvcache.prefix import warm_prefix
from rag.kvcache.stage import KVGenerate, KVIclGenerate
from rag.pipeline import Pipeline
from rag.recipes import document_chunks
from rag.registry import build
from rag.retrievers.bm25 import BM25Retriever
from rag.retrievers.stage import Retrieve
from rag.selectors.stage import Select
from rag.types import SamplingParams

SYSTEM = "Answer the question using the passages, in a few words."


def main() -> None:
    chunks = document_chunks(vital_articles()[: min(int(os.environ.get("RAG_EXAMPLE_DOCS", 400)), 60)])
    retriever = BM25Retriever()
    retriever.add(chunks)
    generator = build("generator", {"type": "transformers", "model": "tiny"})
    questions = ["Who painted the Mona Lisa?", "Which film did Stanley Kubrick direct in 1968?"]
    with tempfile.TemporaryDirectory() as store:
        kv_store = ChunkKV(generator, store, SYSTEM).build(chunks)
        print(f"stored {len(kv_store.chunks)} chunks: {kv_store.nbytes / 1e6:.0f} MB (float16)")
        for mode in ("full", "reuse", "recompute"):
            generate = KVGenerate(store=store, generator=generator, mode=mode, system=SYSTEM,
                                  params=SamplingParams(max_tokens=16, stop=["\n"]))
            for state in Pipeline([Retrieve(retriever, k=3), generate]).run(questions):
                (trace,) = [t for t in state.trace if t.stage == "kv_generate"]
                print(f"{mode:>9} | {state.query} -> {state.answer.text!r} | prefill "
                      f"{1000 * trace.info['prefill_s']:.0f} ms, {trace.info['cached_prompt_tokens']}"
                      f"/{trace.info['prompt_tokens']} prompt tokens from the store")
        in_vllm = KVGenerate(store=store, generator={"type": "vllm", "model": "tiny"}, mode="reuse",
                             system=SYSTEM, params=SamplingParams(max_tokens=16, stop=["\n"]))
        for state in Pipeline([Retrieve(retriever, k=3), in_vllm]).run(questions):
            usage = state.answer.usage
            print(f"     vLLM | {state.query} -> {state.answer.text!r} | {usage.cached_prompt_tokens}"
                  f"/{usage.prompt_tokens} prompt tokens loaded by the KV connector")

    demonstration_kv()
    engine = build("generator", {"type": "vllm", "model": "tiny"})
    fixed = "You classify texts by topic.\n" + "\n".join(
        f"Text: {d.text[:200]}\nTopic: {d.metadata['topic']}" for d in vital_articles()[:6])
    prompts = [f"{fixed}\nText: {q}\nTopic:" for q in ("A bird of prey.", "A law of physics.")]
    print(f"warmed a shared prefix of {warm_prefix(engine, prompts).prompt_tokens} tokens")
    for prompt, out in zip(prompts, engine.generate(prompts, SamplingParams(max_tokens=3))):
        print(f"{out.text!r}: {out.usage.cached_prompt_tokens}/{out.usage.prompt_tokens} prompt tokens cached")


def demonstration_kv() -> None:
    """Topic ICL whose demonstrations come from a situated store, in vLLM."""
    data = vital_topics(max_chars=200)
    pool, test = data[:64], data[2000:2012]
    labels = sorted({d.output for d in data})
    template = topic_template(labels)
    builder = build("generator", {"type": "transformers", "model": "tiny"})
    with tempfile.TemporaryDirectory() as store:
        ChunkKV(builder, store, demo_frame(template)).build(
            demo_chunks(template, pool), context=situated_context(template, pool, k=2))
        select = Select(build("selector", {"type": "knn"}).fit(pool), k=8)
        for mode in ("full", "reuse"):
            answer = KVIclGenerate(store=store, generator={"type": "vllm", "model": "tiny"},
                                   template=template, mode=mode,
                                   params=SamplingParams(max_tokens=6, stop=["\n"]))
            states = Pipeline([select, answer]).run([t.input for t in test])
            right = sum(s.answer.text.strip() == t.output for s, t in zip(states, test))
            usage = states[0].answer.usage
            print(f"demonstration KV, {mode:>5}: {right}/{len(test)} topics right | "
                  f"{usage.cached_prompt_tokens}/{usage.prompt_tokens} prompt tokens loaded")


if __name__ == "__main__":
    main()
