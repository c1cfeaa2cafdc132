"""KV-cache precomputation: time to first token, answer quality, vLLM prefix caching, bytes.

1. TTFT: 4, 8 and 16 chunks of 200 tokens (vital articles cut at 200 model tokens) and a
   question; full prefill vs reuse vs each training-free repair (`--repairs`: CacheBlend at each
   of `--fractions`, EPIC's LegoLink, the last chunk recomputed, APE, and combinations), side by
   side in one run, median of the trials; transformers on CPU (`dtype: auto`); caches stored in
   float16.
2. Quality: vital-qa questions (description -> title), the hybrid retriever's top 4 articles
   as chunks, greedy answers (16 tokens) by full prefill and by each repair: exact match with a
   95% bootstrap interval, the paired EM delta to full prefill with its interval, accuracy (title
   contained) and agreement of each answer with the full-prefill answer (after the standard
   answer normalization). One more full prefill with the two least relevant passages swapped
   measures how often this model's greedy answer changes under an edit that should not matter:
   the noise floor of agreement. With parts 1 and 2 in one run, the summary names the best mode:
   the fastest at 8 chunks whose EM delta is at least -0.02 (best_mode,
   best_mode_ttft_speedup_8_chunks, best_mode_em_delta).
3. vLLM prefix caching: a fixed 8-demonstration prefix (topic classification), time to first
   token of requests sent one at a time, cold (prefix never seen) vs warm (after `warm_prefix`).
4. Bytes of KV stored per 1,000 chunks (float16), from the stores built above.
5. Chunk KV inside vLLM (the KV connector, `rag.kvcache.connector`), one engine with prefix
   caching on, against that engine's own full prefill of the same prompts, in two modes: the
   connector loads every chunk, or all but the last (best-ranked) chunk, which vLLM prefills:
   - TTFT at `--sizes` chunks of 200 tokens (the chunks of part 1), requests one at a time;
   - requests/s with 8 concurrent clients (threads), 16 tokens each, `--throughput-requests`
     per client, median of `--throughput-repeat` runs (min, max; the ratio to full per run);
   - EM on `--vllm-questions` vital-qa questions (hybrid top 4, greedy, 16 tokens), with 95%
     bootstrap intervals, of the EM and of the paired per-question EM delta.
   Writes the top-level `summary` (vllm_ttft_speedup_8_chunks, vllm_em_delta,
   vllm_throughput_ratio_8_clients) of the mode a `kv_generate` stage uses by default.
6. Demonstration KV in vLLM (`--demo-model`, tiny as in the selectors benchmark): topic
   classification by ICL, the selectors benchmark's template and label scoring, 16 demonstrations
   picked per query by kNN from a pool of `--demo-pool`, each demonstration's cache stored once;
   TTFT (one request at a time) and accuracy on `--demo-test` queries, loading every
   demonstration or all but the last N of `--demo-last` (the most similar, which vLLM prefills),
   against full prefill of the same prompts; the same from a situated store (each demonstration
   encoded after its `--demo-context` nearest pool neighbours), rows `--demo-situated-last`
   (summary: demo_kv_ttft_speedup_16_shots, demo_kv_accuracy_delta, of kv_icl_generate's default
   over a situated store). Labels are scored as the ICL pipeline scores them (`predict_labels`).
   Two matched baselines in full prefill see the labelled examples the situated caches carry:
   the distinct neighbours those caches were encoded after, then the same 16 shots; and kNN at
   k = 16 + that many (summary: demo_kv_vs_matched_prefill_delta, against the first; each delta
   with its paired 95% interval).
7. Compression that keeps KV reuse (`--compressors`, in vLLM): each retrieved chunk compressed
   alone, without the question, before its cache is built; per compressor and read (full
   prefill = compression alone, the connector = compression + reuse, the connector with the last
   chunk prefilled): stored bytes over the uncompressed chunks' (KV bytes are proportional to
   tokens), TTFT, EM on `--vllm-questions` questions against full prefill of the uncompressed
   passages (summary: compressed_kv_bytes_ratio and compressed_kv_em_delta, of the first
   compressor read by the connector). Reuse alone is part 5's connector row.

    python benchmarks/kvcache.py [--model bench] [--quality-model bench] [--questions 500]
                                 [--fractions 0.15 0.3] [--repairs reuse last ...] [--ape 0.9 0.9]
                                 [--skip ttft prefix vllm compressed demos]
                                 [--vllm-questions 500] [--demo-pool 1000] [--demo-test 500]
                                 [--demo-last 1 2 3 4] [--demo-situated-last 0 3]
                                 [--demo-context 4]

A part skipped keeps its rows from the last run that made them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import numpy as np
from tqdm.auto import tqdm

from rag.compression import Compressor
from rag.corpus import vital_articles
from rag.eval.datasets import topic_template, vital_qa, vital_topics
from rag.eval.metrics import bootstrap_interval, paired_difference, qa_scores
from rag.eval.report import write_results
from rag.kvcache import ChunkKV, ChunkKVStore
from rag.kvcache.demos import demo_chunks, demo_frame, situated_context
from rag.kvcache.prefix import warm_prefix
from rag.kvcache.reuse import Frame
from rag.kvcache.stage import KVGenerate, KVIclGenerate
from rag.prompts import SHORT_RAG_SYSTEM
from rag.recipes import document_chunks, hybrid_index
from rag.registry import build
from rag.selectors import DemoTemplate
from rag.selectors.prompt import ordered, predict_labels
from rag.text import normalize_answer
from rag.types import Chunk, Demo, SamplingParams

SYSTEM = SHORT_RAG_SYSTEM


LINK = 16  # LegoLink's recomputed tokens at the start of each chunk
REPAIRS = ("reuse", "cacheblend", "legolink", "last", "ape", "cacheblend+last", "legolink+last",
           "ape+last")


def modes(args: argparse.Namespace) -> dict[str, dict]:
    """`ChunkKV.prefill` keyword arguments by row name: full prefill, then the asked repairs."""
    ape = tuple(args.ape)
    parts = {"reuse": {}, "legolink": {"link": LINK}, "last": {"last": 1}, "ape": {"ape": ape}}
    names = {"legolink": f"LegoLink {LINK}", "last": "last chunk", "ape": f"APE T={ape[0]} S={ape[1]}"}
    rows: dict[str, dict] = {"full": {"mode": "full"}}
    for repair in args.repairs:
        pieces = repair.split("+")
        for fraction in (args.fractions if "cacheblend" in pieces else [None]):
            kwargs: dict = {"mode": "recompute", "fraction": fraction} if fraction else {"mode": "reuse"}
            label = [f"CacheBlend {fraction:.0%}"] if fraction else []
            for piece in pieces:
                if piece != "cacheblend":
                    kwargs.update(parts[piece])
                    label += [names.get(piece, piece)] if piece != "reuse" else ["reuse"]
            rows[" + ".join(label)] = kwargs
    return rows


SWAPPED = "full prefill, 2 least relevant passages swapped"
QUESTION = "What is this about?"  # of the TTFT and throughput requests
LAST = "connector + last chunk"  # the connector loads all but the last chunk, vLLM prefills it
VLLM_MODES = ("full", "connector", LAST)


def default_vllm_mode() -> str:
    """What `kv_generate` with a vllm generator does by default: the QA mode each summary
    reports."""
    last = KVGenerate.Config.model_fields["recompute_last"].default
    if last not in (0, 1):
        raise SystemExit(f"kv_generate's default recompute_last={last} has no row here")
    return LAST if last else "connector"


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - began


def timing(seconds: dict[str, list[float]], reference: str = "full") -> dict:
    """Each mode's median time to first token with its (min, max), and each other mode's
    speed-up: the reference's median over its own."""
    row: dict = {}
    for mode, runs in seconds.items():
        row |= {f"{mode} ms": round(1000 * median(runs), 1),
                f"{mode} ms (min, max)": [round(1000 * min(runs), 1), round(1000 * max(runs), 1)]}
    base = median(seconds[reference])
    return row | {f"{mode} speed-up": round(base / median(runs), 2)
                  for mode, runs in seconds.items() if mode != reference}


def store_size(model: str, store: ChunkKVStore, build_s: float) -> dict:
    return {"model": model, "chunks": len(store.chunks), "bytes": store.nbytes,
            "bytes per 1000 chunks": round(store.nbytes / len(store.chunks) * 1000),
            "tokens per chunk": round(np.mean([len(c["ids"]) for c in store.chunks.values()]), 1),
            "build seconds": round(build_s, 1)}


def ttft_chunks(tokenizer, count: int) -> list[Chunk]:  # type: ignore[no-untyped-def]
    """Vital articles cut at 200 model tokens."""
    long = [d for d in vital_articles() if len(tokenizer.encode(d.text)) >= 200]
    chunks = []
    for d in long[:count]:
        text = tokenizer.decode(tokenizer.encode(d.text, add_special_tokens=False)[:200])
        chunks.append(Chunk(id=d.id, doc_id=d.id, text=text, start=0, end=len(text), title=d.title))
    return chunks


def ttft(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict]:
    generator = build("generator", {"type": "transformers", "model": args.model})
    chunks = ttft_chunks(generator.tokenizer, args.trials * max(args.sizes))
    kv = ChunkKV(generator, work / f"ttft-{args.model}", SYSTEM, dtype="float16")
    store, build_s = timed(kv.build, chunks)
    kv.prefill("warm-up?", chunks[:2], "full"), kv.prefill("warm-up?", chunks[:2], "recompute")
    rows, runs = [], modes(args)
    for size in args.sizes:
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for trial in range(args.trials):
            picked = chunks[trial * size : (trial + 1) * size]
            for name, kwargs in runs.items():
                seconds[name].append(timed(kv.prefill, QUESTION, picked, **kwargs)[1])
        rows.append({"chunks": size, "prompt tokens": len(kv.layout(QUESTION, picked).ids),
                     **timing(seconds)})
        print(rows[-1], flush=True)
    return rows, store_size(args.model, store, build_s)


def default_mode(args: argparse.Namespace) -> str:
    """The row of `modes` that `kv_generate` runs by default with the transformers generator."""
    kwargs = KVGenerate.Config.model_construct().prefill_kwargs()  # the defaults
    found = [name for name, run in modes(args).items() if run == kwargs]
    if not found:
        raise SystemExit(f"the kv stages' default {kwargs} is not among --repairs {args.repairs}")
    return found[0]


def best_mode(default: str, ttft_rows: list[dict], quality_rows: list[dict]) -> dict:
    """The summary's `best_mode` keys: the kv stages' default mode, its TTFT speed-up at 8
    chunks and its EM delta, so the summary describes what users get."""
    eight = next(r for r in ttft_rows if r["chunks"] == 8)
    row = next(r for r in quality_rows if r["mode"] == default)
    return {"best_mode": default, "best_mode_ttft_speedup_8_chunks": eight[f"{default} speed-up"],
            "best_mode_em_delta": row["em delta"]}


def paired(name: str, scores: list[float], reference: list[float]) -> dict:
    """Mean of per-question `scores` with its 95% bootstrap interval, and the paired delta to the
    `reference` run's scores on the same questions with the delta's interval."""
    delta, interval = paired_difference(scores, reference)
    return {name: round(float(np.mean(scores)), 4),
            f"{name} 95% interval": [round(x, 4) for x in bootstrap_interval(scores)],
            f"{name} delta": delta, f"{name} delta 95% interval": interval}


def agreement(texts: list[str], reference: list[str]) -> float:
    """Share of answers equal to the reference run's after normalization."""
    return round(float(np.mean([normalize_answer(a) == normalize_answer(b)
                                for a, b in zip(texts, reference)])), 4)


def best_last(retrieved: list) -> list[list[Chunk]]:  # type: ignore[type-arg]
    """Each question's chunks with the best-ranked last, next to the question, as `rag_prompt`
    and `kv_generate` place them."""
    return [[h.chunk for h in hits[::-1]] for hits in retrieved]


def retrieved_top4(questions: int) -> tuple[list, list]:  # type: ignore[type-arg]
    examples = vital_qa(questions)
    hybrid = hybrid_index(document_chunks(vital_articles()), out=Path(".cache/bench-end-to-end/vital-hybrid"))
    return examples, hybrid.search([e.question for e in examples], k=4)


def quality(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict]:
    examples, retrieved = retrieved_top4(args.questions)
    generator = build("generator", {"type": "transformers", "model": args.quality_model})
    kv, build_s = timed(qa_store, generator, work, args.quality_model, retrieved)
    params = SamplingParams(max_tokens=16)
    runs = {**modes(args), SWAPPED: {"mode": "full"}}
    answers: dict[str, list[str]] = {name: [] for name in runs}
    seconds: dict[str, float] = {name: 0.0 for name in runs}
    for example, chunks in tqdm(zip(examples, best_last(retrieved)), total=len(examples),
                                desc="questions"):
        swapped = [chunks[1], chunks[0], *chunks[2:]]
        for name, kwargs in runs.items():
            (prefilled, layout), s = timed(kv.prefill, example.question,
                                           swapped if name == SWAPPED else chunks, **kwargs)
            answers[name].append(kv.decode(prefilled, layout, params).text.strip())
            seconds[name] += s
    rows = []
    scores = {name: [qa_scores(t, e.answers) for t, e in zip(texts, examples)]
              for name, texts in answers.items()}
    for name, texts in answers.items():
        rows.append({"mode": name, "questions": len(examples),
                     **paired("em", [s["em"] for s in scores[name]], [s["em"] for s in scores["full"]]),
                     "acc": round(float(np.mean([s["acc"] for s in scores[name]])), 4),
                     "agreement with full": agreement(texts, answers["full"]),
                     "prefill ms/question": round(1000 * seconds[name] / len(examples), 1)})
        print(rows[-1], flush=True)
    return rows, store_size(args.quality_model, kv.store, build_s)


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


def built(generator, path: Path, chunks: list[Chunk], frame: str | Frame = SYSTEM,  # type: ignore[no-untyped-def]
          compressor: Compressor | None = None, context: dict[str, list[Chunk]] | None = None
          ) -> ChunkKV:
    """A float16 store of these chunks, built once into `path` (kept with `--work`)."""
    kv = ChunkKV(generator, path, frame, dtype="float16")
    if not (path / "manifest.json").exists() or not set(c.id for c in chunks) <= set(kv.store.chunks):
        kv.build(chunks, compressor=compressor, context=context)
    return kv


def qa_store(generator, work: Path, model: str, retrieved: list) -> ChunkKV:  # type: ignore[no-untyped-def,type-arg]
    """The store of every retrieved chunk of the QA questions, shared by the transformers and
    vLLM parts (~0 s to open when --work kept it)."""
    return built(generator, work / f"qa-{model}", unique_chunks(retrieved))


def unique_chunks(retrieved: list) -> list[Chunk]:  # type: ignore[type-arg]
    """Every chunk retrieved for any question, once."""
    return list({h.chunk.id: h.chunk for hits in retrieved for h in hits}.values())


def in_vllm(args: argparse.Namespace, work: Path) -> tuple[dict[str, list[dict]], dict]:
    """The connector, with and without the last chunk prefilled, against the same engine's full
    prefill: TTFT, throughput, EM."""
    hf = build("generator", {"type": "transformers", "model": args.model})
    engine = build("generator", {"type": "vllm", "model": args.model, "kv_connector": True,
                                 "max_model_len": 4096})  # 16 chunks of 200 tokens
    examples, retrieved = retrieved_top4(args.vllm_questions)
    count = args.trials * max(args.sizes) + args.throughput_repeat * args.throughput_requests * 8
    ttft_kv = built(hf, work / f"vllm-ttft-{args.model}", ttft_chunks(hf.tokenizer, count))
    qa = qa_store(hf, work, args.model, retrieved)
    ttft_kv, qa = (ChunkKV(engine, kv.store_path, SYSTEM, "float16") for kv in (ttft_kv, qa))
    chunks = ttft_chunks(hf.tokenizer, count)
    one, sixteen = SamplingParams(max_tokens=1), SamplingParams(max_tokens=16)

    def send(kv: ChunkKV, question: str, picked: list[Chunk], mode: str,
             params: SamplingParams):  # type: ignore[no-untyped-def]
        layout, transfer = kv.request(question, picked, last=mode == LAST)
        return engine.generate_ids([layout.ids], params, None if mode == "full" else [transfer])[0]

    for mode in VLLM_MODES:
        send(ttft_kv, "warm-up?", chunks[:2], mode, one)
    ttft_rows = []
    for size in args.sizes:  # each trial's chunks are new to the prefix cache, in every mode
        seconds: dict[str, list[float]] = {mode: [] for mode in VLLM_MODES}
        for trial in range(args.trials):
            picked = chunks[trial * size : (trial + 1) * size]
            for mode in seconds:
                seconds[mode].append(timed(send, ttft_kv, QUESTION, picked, mode, one)[1])
        row = {"chunks": size, "prompt tokens": len(ttft_kv.layout(QUESTION, picked).ids),
               **timing(seconds)}
        ttft_rows.append(row)
        print(row, flush=True)

    per_repeat = 8 * args.throughput_requests  # chunks new to the prefix cache in each repeat
    rates: dict[str, list[float]] = {mode: [] for mode in VLLM_MODES}
    for repeat in range(args.throughput_repeat):
        begin = args.trials * max(args.sizes) + repeat * per_repeat
        rest = chunks[begin : begin + per_repeat]
        for name in VLLM_MODES:  # 8 clients, each sending its requests one after another
            def client(c: int, mode: str = name) -> None:
                for r in range(args.throughput_requests):
                    start = (c * args.throughput_requests + r) % max(1, len(rest) - 8)
                    send(ttft_kv, QUESTION, rest[start : start + 8], mode, sixteen)
            began = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(client, range(8)))
            rates[name].append(per_repeat / (time.perf_counter() - began))
            print(name, repeat, round(rates[name][-1], 3), flush=True)
    throughput_rows = []
    for name, runs in rates.items():
        ratios = [rate / full for rate, full in zip(runs, rates["full"])]  # per repeat
        throughput_rows.append({"mode": name, "clients": 8, "requests": per_repeat,
                                "repeats": len(runs), "requests/s": round(median(runs), 3),
                                "requests/s (min, max)": [round(min(runs), 3), round(max(runs), 3)],
                                "ratio to full": round(median(ratios), 3),
                                "ratio to full (min, max)": [round(x, 3) for x in (min(ratios),
                                                                                   max(ratios))]})

    ordered_chunks = best_last(retrieved)
    answers = {}
    for mode in VLLM_MODES:
        prompts = [qa.request(e.question, c, last=mode == LAST)
                   for e, c in zip(examples, ordered_chunks)]
        answers[mode] = engine.generate_ids([layout.ids for layout, _ in prompts], sixteen,
                                            None if mode == "full" else [t for _, t in prompts])
    em = {name: [qa_scores(g.text, e.answers)["em"] for g, e in zip(gens, examples)]
          for name, gens in answers.items()}
    quality_rows = [{"mode": name, "questions": len(examples), **paired("em", em[name], em["full"]),
                     "agreement with full": agreement([g.text for g in gens],
                                                      [g.text for g in answers["full"]])}
                    for name, gens in answers.items()]
    print(quality_rows, flush=True)
    default = default_vllm_mode()
    eight = next(r for r in ttft_rows if r["chunks"] == 8) if 8 in args.sizes else None
    summary = {"vllm_ttft_speedup_8_chunks": eight[f"{default} speed-up"] if eight else None,
               "vllm_em_delta": next(r["em delta"] for r in quality_rows if r["mode"] == default),
               "vllm_throughput_ratio_8_clients": next(
                   r["ratio to full"] for r in throughput_rows if r["mode"] == default)}
    return {"vllm connector ttft": ttft_rows, "vllm connector throughput": throughput_rows,
            "vllm connector quality": quality_rows}, summary


def compressed_kv(args: argparse.Namespace, work: Path) -> tuple[dict[str, list[dict]], dict]:
    """Chunks compressed without the question at index time, then cached, in vLLM: bytes, TTFT
    and EM of each compressed store read by full prefill (compression alone), by the connector
    (compression + reuse) and by the connector with the last chunk prefilled, against full
    prefill of the passages as retrieved. Reuse alone, uncompressed, is part 5's connector row."""
    examples, retrieved = retrieved_top4(args.vllm_questions)
    unique = unique_chunks(retrieved)
    hf = build("generator", {"type": "transformers", "model": args.model})
    caches, build_s = {}, {}
    for name in args.compressors:
        scorer = {"generator": {"type": "transformers", "model": "tiny"}} if name == "llmlingua" else {}
        compressor = build("compressor", {"type": name, "ratio": args.compress_ratio, **scorer})
        folder = work / f"compressed-{name}-{args.model}"
        # ~0 s when the store is reused from --work
        caches[name], build_s[name] = timed(built, hf, folder, unique, compressor=compressor)
    stores = {name: kv.store for name, kv in caches.items()}
    del hf, caches  # the engine below needs the memory
    engine = build("generator", {"type": "vllm", "model": args.model, "kv_connector": True})
    readers = {name: ChunkKV(engine, store.path, SYSTEM, "float16") for name, store in stores.items()}
    ordered_chunks = best_last(retrieved)
    reference = next(iter(readers.values()))
    requests = {"uncompressed, full prefill": [
        (reference.text_layout(e.question, c), None) for e, c in zip(examples, ordered_chunks)]}
    for store, reader in readers.items():
        for read, last in (("full prefill", None), ("reuse", False), ("reuse + last chunk", True)):
            requests[f"{store}, {read}"] = [
                (layout, None if last is None else transfer) for layout, transfer in (
                    reader.request(e.question, c, last=bool(last)) for e, c in zip(examples, ordered_chunks))]
    one, sixteen = SamplingParams(max_tokens=1), SamplingParams(max_tokens=16)

    def send(run: str, at: slice, params: SamplingParams):  # type: ignore[no-untyped-def]
        layouts, transfers = zip(*requests[run][at])
        loads = None if transfers[0] is None else list(transfers)
        return engine.generate_ids([layout.ids for layout in layouts], params, loads)

    for run in requests:  # warm-up on the last question, which the TTFT trials do not use
        send(run, slice(-1, None), one)
    seconds: dict[str, list[float]] = {run: [] for run in requests}
    for q in range(args.compressed_trials):  # each question's prompts are new to the prefix cache
        for run in requests:
            seconds[run].append(timed(send, run, slice(q, q + 1), one)[1])
    answers = {run: send(run, slice(None), sixteen) for run in tqdm(requests, desc="EM passes")}
    em = {run: [qa_scores(g.text, e.answers)["em"] for g, e in zip(gens, examples)]
          for run, gens in answers.items()}
    rows = []
    for run in requests:
        store, read = run.split(", ", 1)
        record = stores[store].manifest["compression"] if store in stores else None
        rows.append({"store": store, "read": read, "questions": len(examples),
                     "prompt tokens": round(float(np.mean([len(l.ids) for l, _ in requests[run]])), 1),
                     "stored bytes ratio": round(record["kept_tokens"] / record["original_tokens"], 3)
                     if record else None,
                     "ttft ms": round(1000 * median(seconds[run]), 1),
                     "ttft ms (min, max)": [round(1000 * min(seconds[run]), 1), round(1000 * max(seconds[run]), 1)],
                     **paired("em", em[run], em["uncompressed, full prefill"])})
        print(rows[-1], flush=True)
    first = args.compressors[0]  # fixed in advance, not chosen by the outcome
    default_read = "reuse + last chunk" if default_vllm_mode() == LAST else "reuse"
    chosen = next(r for r in rows if r["store"] == first and r["read"] == default_read)
    summary = {"compressed_kv_bytes_ratio": chosen["stored bytes ratio"],
               "compressed_kv_em_delta": chosen["em delta"]}
    sizes = [store_size(args.model, store, build_s[name])
             | {"store": name, "compression": store.manifest["compression"]}
             for name, store in stores.items()]
    return {"compressed kv": rows, "compressed kv bytes": sizes}, summary


def demo_mode(last: int, situated: bool = False) -> str:
    """The demonstration table's row that loads all but the `last` demonstrations."""
    store = "situated connector" if situated else "connector"
    return f"{store} + last {last}" if last else store


MATCHED = "full prefill, neighbours + 16 shots"
KNN_MATCHED = "full prefill, kNN at 16 + neighbours"


def matched_pieces(picks: list[Demo], wide: list[Demo], template: DemoTemplate,
                   context: dict[str, list[Chunk]]) -> dict[str, list[Chunk]]:
    """One query's prompts of the two matched baselines: the neighbours the situated caches of
    its 16 shots were encoded after (each once, none of the 16, in the order those caches saw
    them), then the 16 as shown; and kNN's top 16 + as many, most similar last (`wide`: kNN's
    ranking, whose first 16 are the shots), so each sees as many labelled examples."""
    shown = {d.id for d in picks}
    before = list({c.id: c for d in picks for c in context[d.id] if c.id not in shown}.values())
    return {MATCHED: [*before, *demo_chunks(template, picks)],
            KNN_MATCHED: demo_chunks(template, ordered(wide[: len(picks) + len(before)],
                                                       "similar_last"))}


def demo_kv(args: argparse.Namespace, work: Path) -> tuple[dict[str, list[dict]], dict]:
    """Selected demonstrations' caches assembled in vLLM, all of them or all but the last
    `--demo-last` ones, from a plain store and from a situated one (`--demo-situated-last`),
    against full prefill of the same 16 shots and against the two matched full prefills
    (`matched_pieces`): TTFT, accuracy scored as the ICL pipeline scores (`predict_labels`)."""
    data = vital_topics(max_chars=300, seed=0)
    pool, test = data[: args.demo_pool], data[4000 : 4000 + args.demo_test]  # as benchmarks/selectors.py
    labels = sorted({d.output for d in data})
    template = topic_template(labels)
    knn = build("selector", {"type": "knn"}).fit(pool)
    wide = knn.select([t.input for t in test], 16 * (1 + args.demo_context))
    picks = [ordered(w[:16], "similar_last") for w in wide]
    hf = build("generator", {"type": "transformers", "model": args.demo_model})
    used = list({d.id: d for p in picks for d in p}.values())
    context = situated_context(template, pool, k=args.demo_context)
    stores = {situated: built(hf, work / f"demos{'-situated' * situated}-{args.demo_model}",
                              demo_chunks(template, used), demo_frame(template),
                              context=context if situated else None)
              for situated in (False, True)}
    lasts = {False: sorted({0, *args.demo_last}), True: sorted(set(args.demo_situated_last))}
    readers = {situated: ChunkKV(hf, stored.store_path, demo_frame(template), "float16")
               for situated, stored in stores.items()}
    requests = {demo_mode(last, situated): [kv.request(t.input, demo_chunks(template, p), last)
                                            for t, p in zip(test, picks)]
                for situated, kv in readers.items() for last in lasts[situated]}
    ids = [layout.ids for layout, _ in requests["connector"]]  # the same prompt in every mode
    prompts: dict[str, tuple[list[list[int]], list[dict] | None]] = {"full": (ids, None)} | {
        mode: (ids, [transfer for _, transfer in made]) for mode, made in requests.items()}
    matched = [matched_pieces(p, w, template, context) for p, w in zip(picks, wide)]
    for baseline in (MATCHED, KNN_MATCHED):  # tokenized as the stores' pieces, read in full
        prompts[baseline] = ([readers[True].text_layout(t.input, m[baseline]).ids
                              for t, m in zip(test, matched)], None)
    longest = max(len(i) for made, _ in prompts.values() for i in made)
    engine = build("generator", {"type": "vllm", "model": args.demo_model, "kv_connector": True,
                                 "max_model_len": longest + 1})  # the matched prompts + 1 token
    timed_modes = ["full", *requests]  # the same 16 shots: the matched prompts are longer

    def send(mode: str, at: slice, score: list[str] | None = None):  # type: ignore[no-untyped-def]
        made, loads = prompts[mode]
        loaded = None if loads is None else loads[at]
        if score is None:
            return engine.generate_ids(made[at], SamplingParams(max_tokens=1), loaded)
        return engine.next_token_logprobs_ids(made[at], score, loaded)

    for mode in timed_modes:  # warm-up: the instruction prefix and the engine's first steps
        send(mode, slice(-1, None))
    seconds: dict[str, list[float]] = {mode: [] for mode in timed_modes}
    for q in range(args.trials):  # before the accuracy pass caches them
        for mode in timed_modes:
            seconds[mode].append(timed(send, mode, slice(q, q + 1))[1])
    ttft_row = {"shots": 16, "prompt tokens": round(float(np.mean([len(i) for i in ids])), 1),
                **timing(seconds)}
    print(ttft_row, flush=True)

    def correct(mode: str) -> list[float]:
        predicted = predict_labels(lambda options: send(mode, slice(None), options), template,
                                   labels)
        return [float(label == t.output) for label, t in zip(predicted, test)]

    right = {mode: correct(mode) for mode in prompts}
    shots = {MATCHED: [len(m[MATCHED]) for m in matched],
             KNN_MATCHED: [len(m[KNN_MATCHED]) for m in matched]}
    rows = [{"mode": mode, "queries": len(test),
             "demonstrations": round(float(np.mean(shots.get(mode, [16]))), 1),
             "prompt tokens": round(float(np.mean([len(i) for i in prompts[mode][0]])), 1),
             **paired("accuracy", scores, right["full"])} for mode, scores in right.items()]
    print(rows, flush=True)
    default = demo_mode(KVIclGenerate.DEFAULT_LAST["situated"], situated=True)
    if default not in prompts:
        raise SystemExit(f"kv_icl_generate's default ({default}) is not among --demo-situated-last")
    summary = {"demo_kv_ttft_speedup_16_shots": ttft_row[f"{default} speed-up"]}
    for key, baseline in (("demo_kv_accuracy_delta", "full"),
                          ("demo_kv_vs_matched_prefill_delta", MATCHED)):
        delta, interval = paired_difference(right[default], right[baseline])
        summary |= {key: delta, f"{key}_95_interval": interval}
    return {"demo kv ttft": [ttft_row], "demo kv accuracy": rows}, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bench", help="TTFT and prefix-caching model")
    parser.add_argument("--quality-model", default="bench")
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--prefix-queries", type=int, default=20)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.15],
                        help="CacheBlend recompute fractions")
    parser.add_argument("--repairs", nargs="+", default=list(REPAIRS), choices=REPAIRS,
                        help="TTFT and quality rows beside full prefill")
    parser.add_argument("--ape", type=float, nargs=2, default=[0.9, 0.9],
                        metavar=("TEMPERATURE", "SCALE"))
    parser.add_argument("--vllm-questions", type=int, default=500)
    parser.add_argument("--throughput-requests", type=int, default=4, help="per client")
    parser.add_argument("--throughput-repeat", type=int, default=3,
                        help="throughput runs per mode, each on chunks new to the prefix cache")
    parser.add_argument("--compressors", nargs="+", default=["llmlingua", "extractive"],
                        choices=["llmlingua", "extractive"],
                        help="question-free compression before caching (the first gives the summary)")
    parser.add_argument("--compress-ratio", type=float, default=2.0)
    parser.add_argument("--compressed-trials", type=int, default=10, help="TTFT questions")
    parser.add_argument("--demo-model", default="tiny")
    parser.add_argument("--demo-pool", type=int, default=1000)
    parser.add_argument("--demo-test", type=int, default=500)
    parser.add_argument("--demo-last", type=int, nargs="+", default=[1, 2, 3, 4],
                        help="rows that prefill the last N demonstrations over the loaded rest")
    parser.add_argument("--demo-situated-last", type=int, nargs="+", default=[0, 3],
                        help="the same rows over the situated store")
    parser.add_argument("--demo-context", type=int, default=4,
                        help="nearest pool neighbours each situated demonstration is encoded after")
    parser.add_argument("--skip", nargs="+", default=[],
                        choices=["ttft", "quality", "prefix", "vllm", "compressed", "demos"],
                        help="parts not to run; their rows stay from an earlier run")
    parser.add_argument("--work", default=None, help="folder for the KV stores (default: temp)")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder of kvcache.json (default benchmarks/results; a scratch one "
                             "for trial runs)")
    args = parser.parse_args()
    resolved = {name: build("generator", {"type": name, "model": args.model}).dtype
                for name in ("transformers", "vllm")}  # `auto` resolved; nothing loaded yet
    setup = {"ttft": f"{args.model}, transformers {resolved['transformers']} on CPU, chunks of "
                     f"200 tokens, median of {args.trials} trials, question '{QUESTION}'",
             "quality": f"{args.questions} vital-qa questions, hybrid top 4, {args.quality_model}, "
                        f"greedy, 16 tokens; system prompt: {SYSTEM}",
             "prefix caching (vLLM)": f"{args.model}, 8 topic demonstrations, {args.prefix_queries} requests"}
    vllm_setup = (f"{args.model} in vLLM ({resolved['vllm']} on CPU, prefix caching on), chunk "
                  "caches stored in float16, loaded by the KV connector (all chunks, or all but "
                  "the last, which vLLM prefills); against the same engine's full prefill")
    setup.update({"vllm connector ttft": f"{vllm_setup}; chunks of 200 tokens, median of {args.trials} trials",
                  "vllm connector throughput": f"{vllm_setup}; 8 client threads x "
                  f"{args.throughput_requests} requests of 8 chunks, 16 tokens, median of "
                  f"{args.throughput_repeat} runs",
                  "vllm connector quality": f"{vllm_setup}; {args.vllm_questions} vital-qa questions, "
                  "hybrid top 4, greedy, 16 tokens; paired bootstrap interval of the EM delta"})
    demo_setup = (f"{args.demo_model} in vLLM, topic ICL (selectors benchmark template), 16 kNN "
                  f"demonstrations from a pool of {args.demo_pool}, {args.demo_test} queries; "
                  "demonstration caches stored in float16, loaded by the KV connector; plain "
                  "store: each demonstration encoded after the instruction alone; situated: after "
                  f"the instruction and its {args.demo_context} nearest pool neighbours; labels "
                  "scored as the ICL pipeline scores them (rag.selectors.predict_labels: the "
                  "first token of the template's answer, leading space included)")
    compressed_setup = (f"{args.model} in vLLM (prefix caching on), {args.vllm_questions} vital-qa "
                        f"questions, hybrid top 4, greedy, 16 tokens; each chunk compressed alone, "
                        f"without the question, to 1/{args.compress_ratio:g} of its tokens before "
                        "its float16 cache is built (llmlingua: question-free token pruning "
                        "scored by tiny; extractive: lead sentences); TTFT: median of "
                        f"{args.compressed_trials} questions, one at a time; EM delta against full "
                        "prefill of the uncompressed passages, paired bootstrap interval")
    setup.update({"compressed kv": compressed_setup, "compressed kv bytes": compressed_setup})
    setup.update({"demo kv ttft": f"{demo_setup}; median of {args.trials} queries, one at a time",
                  "demo kv accuracy": f"{demo_setup}; matched baselines, in full prefill: "
                  f"'{MATCHED}' (exactly the distinct neighbour demonstrations the situated caches "
                  "of the 16 shots were encoded after, none of the 16, in the order those caches "
                  f"saw them, then the 16 as shown) and '{KNN_MATCHED}' (kNN's top 16 + as many "
                  "as that query's neighbours, most similar last); paired bootstrap interval of "
                  "each delta to full prefill of the 16 shots"})
    sections, summary = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        if "ttft" not in args.skip:
            sections["ttft"], store = ttft(args, work)
            sections["kv bytes"] = [store]
        if "quality" not in args.skip:
            sections["quality"], store = quality(args, work)
            sections["kv bytes (quality store)"] = [store]
        if "ttft" in sections and "quality" in sections and 8 in args.sizes:
            summary.update(best_mode(default_mode(args), sections["ttft"], sections["quality"]))
        if "vllm" not in args.skip:
            parts, found = in_vllm(args, work)
            sections.update(parts)
            summary.update(found)
        if "compressed" not in args.skip:
            parts, found = compressed_kv(args, work)
            sections.update(parts)
            summary.update(found)
        if "demos" not in args.skip:
            parts, found = demo_kv(args, work)
            sections.update(parts)
            summary.update(found)
    if "prefix" not in args.skip:
        sections["prefix caching (vLLM)"] = prefix_caching(args)
    write_results("kvcache", {n: setup[n] for n in sections if n in setup}, sections,
                  folder=args.results, keep_other_sections=True, summary=summary or None)


if __name__ == "__main__":
    main()
