"""End-to-end QA and code generation, every row a pipeline run through `rag.eval`.

QA (`--skip code`): questions are "What is the name of the <Wikidata description>?" with the
article title as the gold answer (`rag.eval.datasets.vital_qa`, seed 0), over all 10,033
articles, one chunk each, from one saved hybrid index. Pipelines: closed-book; naive RAG (dense
HNSW, k=3); hybrid RAG (BM25 + dense, convex, BM25 weight 0.3, k=3); the default `best_qa`
(hybrid k=3, extractive compression 2x); hybrid top N reranked by an LLM to 3. Short-answer
instructions, as FlashRAG's, so exact match measures the answer rather than its phrasing.

Code (`--skip qa`), all 164 HumanEval problems with `--model` (`bench`):
- greedy zero-shot (`rag.recipes.code_generation`), the reference;
- pickers: 10 samples at T = 0.8 per problem, generated once through a `cached` generator and
  shared by every picker pipeline; each runs the docstring examples and CodeT's generated tests
  (2 replies of 5 asserts) in the sandbox and picks: random, log-prob, docstring examples +
  log-prob, CodeT, MBR-exec, and LEVER cross-validated over 5 folds of problems (each fold's
  verifier trained on the other folds' samples, labelled by the hidden tests); the pass@10
  ceiling; every picker split by problems with and without `>>>` examples;
- demonstrations (`--demo-dtype`): 2 shots from the other 163 problems, picked by kNN (MiniLM)
  and by LAIL trained with the target model's own feedback (log P(program | example, task) under
  the plain-text code template), cross-fitted over halves, each shown as chat turns and as a
  plain-text completion prompt, beside zero-shot in both formats.

    python benchmarks/end_to_end.py [--skip qa|code] [--code-parts greedy pickers demos]
                                    [--dtype float32] [--demo-dtype auto] [--qa-pipelines NAME ...]

A run in another `--dtype` writes its own sections (`qa_bfloat16`, `code_greedy_bfloat16`), the
float32 rows stay the reference:

    python benchmarks/end_to_end.py --skip code --dtype bfloat16 --qa-pipelines hybrid-k3-extractive-2x
    python benchmarks/end_to_end.py --skip qa --dtype bfloat16 --code-parts greedy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rag.compression.stage import Compress
from rag.corpus import vital_articles
from rag.dtypes import resolve_device, resolve_dtype
from rag.errors import RagError
from rag.eval.datasets import CodeTask, humaneval, vital_qa
from rag.eval.harness import QA_COLUMNS, evaluate_code, evaluate_qa
from rag.eval.metrics import paired_difference
from rag.eval.runner import CodePrediction, load_cache, run_code, summarize_code
from rag.eval.report import git_commit, write_results
from rag.generators.stage import Generate
from rag.pipeline import Pipeline
from rag.prompts import SHORT_CLOSED_BOOK_SYSTEM, SHORT_RAG_SYSTEM, RagPrompt
from rag.prompts.templates import CODE_COMPLETION
from rag.recipes import best_qa, closed_book, code_generation, document_chunks, hybrid_index
from rag.registry import build
from rag.rerankers.stage import Rerank
from rag.retrievers.stage import Retrieve
from rag.selectors import load_selector, train_selector, write_demos
from rag.state import State
from rag.types import SamplingParams
from rag.verifiers import LeverVerifier
from rag.verifiers.code import doctest_examples
from rag.verifiers.pick import lever_features

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLES, TEMPERATURE, MAX_TOKENS, SHOTS, LEVER_FOLDS = 10, 0.8, 384, 2, 5
PICKERS = ("random", "logprob", "examples", "codet", "mbr_exec")


def generator_spec(args: argparse.Namespace, dtype: str) -> dict[str, Any]:
    return {"type": "vllm", "model": args.model, "max_model_len": 4096, "dtype": dtype}


def dtype_section(name: str, dtype: str) -> str:
    """float32 is the reference; a run in another dtype gets its own section (and report folder)
    beside it, so `limits.py` can compare the two."""
    return name if dtype == "float32" else f"{name}_{dtype}"


# ---- QA -----------------------------------------------------------------------------------

def qa_pipelines(args: argparse.Namespace) -> dict[str, Pipeline]:
    hybrid = hybrid_index(document_chunks(vital_articles()), out=args.work / "vital-hybrid")
    dense = hybrid.retrievers[1]
    generator = generator_spec(args, args.dtype)
    params = SamplingParams(max_tokens=args.max_tokens)
    answer = [RagPrompt(system=SHORT_RAG_SYSTEM), Generate(generator, params)]
    reranker = {"type": args.reranker, "generator": generator, "max_words": 60}
    return {
        "closed-book": closed_book(generator, args.max_tokens, SHORT_CLOSED_BOOK_SYSTEM),
        "naive-rag-dense-k3": Pipeline([Retrieve(dense, k=3), *answer]),
        "hybrid-rag-k3": Pipeline([Retrieve(hybrid, k=3), *answer]),
        "hybrid-k3-extractive-2x": best_qa(hybrid, generator, k=3, max_tokens=args.max_tokens),
        f"hybrid-top{args.rerank_depth}-{args.reranker}-k3": Pipeline(
            [Retrieve(hybrid, k=args.rerank_depth), Rerank(reranker, k=3), *answer]),
    }


def qa(args: argparse.Namespace) -> dict[str, list[dict]]:
    pipelines = qa_pipelines(args)
    unknown = set(args.qa_pipelines or ()) - set(pipelines)
    if unknown:
        raise SystemExit(f"unknown --qa-pipelines {sorted(unknown)}; known: {sorted(pipelines)}")
    chosen = {n: p for n, p in pipelines.items() if not args.qa_pipelines or n in args.qa_pipelines}
    section = dtype_section("qa", args.dtype)
    summaries = evaluate_qa(chosen, vital_qa(args.questions), args.out / section, dataset="vital-qa")
    rows = [{"configuration": name, **{c: round(s[c], 4) for c in QA_COLUMNS}}
            for name, s in summaries.items()]
    if args.qa_pipelines:
        rows = merged_rows(args.results / "end_to_end.json", section, rows)
    return {section: rows}


def merged_rows(path: Path, section: str, fresh: list[dict]) -> list[dict]:
    """A run of some pipelines replaces their rows and keeps the section's others; every row
    then names the commit that made it, since the section no longer comes from one run."""
    record = json.loads(path.read_text()) if path.exists() else {"results": {}}
    before = record.get("sections", {}).get(section, record).get("commit", "unknown")[:7]
    now = {r["configuration"]: {**r, "commit": git_commit()[:7]} for r in fresh}
    kept = [now.pop(r["configuration"], {**r, "commit": r.get("commit", before)})
            for r in record["results"].get(section, [])]
    return kept + list(now.values())


# ---- code ---------------------------------------------------------------------------------

def share(predictions: list[CodePrediction], keep: set[str] | None = None) -> float | None:
    """The answer pass rate (`summarize_code`) over the problems in `keep` (all by default)."""
    chosen = [p for p in predictions if keep is None or p.id in keep]
    return round(summarize_code(chosen)["answer_pass"], 4) if chosen else None


def picker_row(name: str, predictions: list[CodePrediction], with_examples: set[str]) -> dict:
    ids = {p.id for p in predictions}
    return {"picker": name, "problems": len(predictions), "pass@1": share(predictions),
            f"with >>> examples ({len(ids & with_examples)})": share(predictions, with_examples),
            f"without ({len(ids - with_examples)})": share(predictions, ids - with_examples)}


def versus_greedy(picked: list[CodePrediction], greedy: list[CodePrediction]) -> dict[str, Any]:
    """A picker's pass@1 minus greedy's with its paired 95% interval, problem by problem: whether
    picking among samples beats one greedy answer on these problems, not only on average."""
    diff, interval = paired_difference([p.answer_passed for p in picked],
                                       [g.answer_passed for g in greedy])
    return {"minus greedy": diff, "minus greedy, paired 95% interval": interval}


def sampled_pipeline(cached: dict[str, Any], picker: str, verifier: Path | None = None) -> Pipeline:
    return code_generation(cached, samples=SAMPLES, temperature=TEMPERATURE, picker=picker,
                           checks=("examples", "generated"), test_generator=cached,
                           max_tokens=MAX_TOKENS, verifier=verifier)


def lever_predictions(args: argparse.Namespace, tasks: list[CodeTask], cached: dict[str, Any],
                      labelled: dict[str, CodePrediction]) -> list[CodePrediction]:
    """LEVER cross-validated by problem: each fold picks with a verifier trained on the others."""
    executed = Pipeline(sampled_pipeline(cached, "codet").stages[:-1])  # samples, run, unpicked
    states = executed.run([State(query=t.prompt, entry_point=t.entry_point) for t in tasks],
                          progress=True)
    rows = {t.id: lever_features(s.programs, s.executions) for t, s in zip(tasks, states)}
    predictions: dict[str, CodePrediction] = {}
    for fold in range(LEVER_FOLDS):
        train = [t for i, t in enumerate(tasks) if i % LEVER_FOLDS != fold]
        verifier = LeverVerifier().fit([r for t in train for r in rows[t.id]],
                                       [ok for t in train for ok in labelled[t.id].passed])
        path = args.work / f"lever-{args.dtype}-fold-{fold}.json"
        verifier.save(path)
        held_out = [t for i, t in enumerate(tasks) if i % LEVER_FOLDS == fold]
        folder = args.out / dtype_section("humaneval", args.dtype) / "pick-lever" / f"fold-{fold}"
        for p in run_code(sampled_pipeline(cached, "lever", path), held_out, folder):
            predictions[p.id] = p
    return [predictions[t.id] for t in tasks]




def code_greedy_and_pickers(args: argparse.Namespace, tasks: list[CodeTask]) -> dict[str, list[dict]]:
    generator = generator_spec(args, args.dtype)
    cached = {"type": "cached", "generator": generator,
              "path": str(args.work / f"generations-{args.model}-{args.dtype}.jsonl")}
    out = args.out / dtype_section("humaneval", args.dtype)
    pipelines = {"greedy": code_generation(generator, max_tokens=MAX_TOKENS)}
    if "pickers" in args.code_parts:
        pipelines |= {f"pick-{m}": sampled_pipeline(cached, m) for m in PICKERS}
    evaluate_code(pipelines, tasks, out)
    greedy = load_cache(out / "greedy" / "predictions.jsonl", CodePrediction)
    rows = {dtype_section("code_greedy", args.dtype): [{
        "configuration": f"greedy zero-shot ({args.dtype})", "problems": len(tasks),
        "pass@1": share(list(greedy.values()))}]}
    if "pickers" not in args.code_parts:
        return rows
    with_examples = {t.id for t in tasks if doctest_examples(t.prompt)}
    picked = {m: [load_cache(out / f"pick-{m}" / "predictions.jsonl", CodePrediction)[t.id] for t in tasks]
              for m in PICKERS}
    labelled = {p.id: p for p in picked["codet"]}
    try:
        picked["lever"] = lever_predictions(args, tasks, cached, labelled)
    except RagError as exc:  # a fold whose samples all pass or all fail: nothing to learn
        print(f"LEVER skipped: {exc}", flush=True)
    greedy_rows = [greedy[t.id] for t in tasks]
    table = [{**picker_row("greedy (one sample at T=0)", greedy_rows, with_examples),
              "minus greedy": "", "minus greedy, paired 95% interval": ""}]
    table += [{**picker_row(m, ps, with_examples), **versus_greedy(ps, greedy_rows)}
              for m, ps in picked.items()]
    ceiling = summarize_code(picked["codet"])
    table.append({"picker": f"pass@{SAMPLES} ceiling", "problems": len(tasks),
                  "pass@1": round(ceiling[f"pass@{SAMPLES}"], 4)})
    table.append({"picker": f"unbiased pass@1 of the {SAMPLES} samples", "problems": len(tasks),
                  "pass@1": round(ceiling["pass@1"], 4)})
    rows[dtype_section("code_pickers", args.dtype)] = table
    return rows


def lail_selectors(args: argparse.Namespace, pool: list[CodeTask], pool_file: Path,
                   generator: dict[str, Any]) -> list[dict[str, Any]]:
    """Two LAIL selectors, each trained on one half of the problems with the target model's
    feedback; the one trained on half h picks demonstrations for half 1 - h."""
    work = args.work / f"lail-{args.model}-{args.demo_dtype}"
    # kept with the results: scoring is the long part (about 95 min here), so a fresh clone resumes
    scores = args.out / "humaneval" / f"lail-{args.model}-{args.demo_dtype}-llm-scores.jsonl"
    halves = [pool[0::2], pool[1::2]]
    specs = []
    for half, anchors in enumerate(halves):
        folder = work / f"trained-on-half-{half}"
        if not (folder / "selector.json").is_file():
            trained = train_selector(
                "lail", [t.as_demo() for t in pool], [t.as_demo() for t in anchors],
                build("generator", generator), folder, template=CODE_COMPLETION,
                candidates=args.lail_candidates, pool_path=str(pool_file),
                scores_cache=scores)
            print(f"LAIL half {half}: {trained.llm_scored} scorings in {trained.scoring_seconds:.0f} s, "
                  f"training {trained.training_seconds:.0f} s", flush=True)
        specs.append(load_selector(folder).spec())
    return specs


def code_demos(args: argparse.Namespace, tasks: list[CodeTask]) -> dict[str, list[dict]]:
    pool = humaneval()
    pool_file = write_demos(args.work / "humaneval-pool.jsonl", [t.as_demo() for t in pool])
    generator = generator_spec(args, args.demo_dtype)
    out = args.out / "humaneval" / f"demos-{args.demo_dtype}"
    lail = lail_selectors(args, pool, pool_file, generator)
    halves = [tasks[1::2], tasks[0::2]]  # tasks picked for by the selector of half 0, of half 1
    rows = []
    batch = args.demo_batch
    dtype = resolve_dtype(args.demo_dtype, resolve_device("auto"), "generator")
    for style in args.demo_formats:
        common = {"max_tokens": MAX_TOKENS, "style": style}
        zero = evaluate_code({f"zero-shot-{style}": code_generation(generator, **common)}, tasks,
                             out, batch_size=batch)
        knn = evaluate_code({f"knn-{style}": code_generation(
            generator, pool=pool_file, shots=SHOTS, **common)}, tasks, out, batch_size=batch)
        lail_predictions = []
        for half, selector in enumerate(lail):
            pipeline = code_generation(generator, pool=pool_file, selector=selector, shots=SHOTS,
                                       **common)
            folder = out / f"lail-{style}" / f"half-{half}"
            lail_predictions += run_code(pipeline, halves[half], folder, batch)
        knn_passed = load_cache(out / f"knn-{style}" / "predictions.jsonl", CodePrediction)
        _, versus_knn = paired_difference(
            [p.answer_passed for p in lail_predictions],
            [knn_passed[p.id].answer_passed for p in lail_predictions])
        for name, value, interval in (
                ("zero-shot", zero[f"zero-shot-{style}"]["answer_pass"], ""),
                ("kNN (MiniLM)", knn[f"knn-{style}"]["answer_pass"], ""),
                (f"LAIL ({args.model}'s own feedback)", share(lail_predictions), versus_knn)):
            rows.append({"demonstrations": name, "format": style, "shots": 0 if name == "zero-shot" else SHOTS,
                         "problems": len(tasks), "pass@1": round(value, 4), "dtype": dtype,
                         "LAIL minus kNN, paired 95% interval": interval})
    return {"code_demos": rows}


def code(args: argparse.Namespace) -> dict[str, list[dict]]:
    tasks = humaneval(args.code_problems)
    sections = code_greedy_and_pickers(args, tasks) if {"greedy", "pickers"} & set(args.code_parts) else {}
    if "demos" in args.code_parts:
        sections |= code_demos(args, tasks)
    return sections


def summary(results: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """The headline figures issue #25 checks, by the section each is computed from (present once
    their sections have run), so a rerun of one section replaces only its own figures."""
    found: dict[str, dict[str, Any]] = {}
    if greedy := results.get("code_greedy"):
        found["code_greedy"] = {"greedy_pass1": greedy[0]["pass@1"]}
    if pickers := results.get("code_pickers"):
        real = [r for r in pickers if r["picker"] in (*PICKERS, "lever")]
        best = max(real, key=lambda r: r["pass@1"])
        found["code_pickers"] = {
            "best_picker": best["picker"], "best_picker_pass1": best["pass@1"],
            "pass_at_10": next(r["pass@1"] for r in pickers if "ceiling" in r["picker"])}
    if demos := results.get("code_demos"):
        by_format = {}
        for row in demos:
            by_format.setdefault(row["format"], {})[row["demonstrations"].split(" ")[0]] = row["pass@1"]
        # Fixed in advance, not chosen by the outcome: the LAIL paper prompts plain-text completions.
        fmt = "completion" if "completion" in by_format else next(iter(by_format))
        found["code_demos"] = {"lail_target_feedback_pass1": by_format[fmt]["LAIL"],
                               "knn_pass1": by_format[fmt]["kNN"], "demo_format": fmt}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--dtype", default="float32", help="QA, greedy and pickers")
    parser.add_argument("--demo-dtype", default="auto", help="the demonstrations comparison")
    parser.add_argument("--reranker", default="llm-pointwise")
    parser.add_argument("--rerank-depth", type=int, default=10, help="hybrid hits the reranker reorders")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--qa-pipelines", nargs="+", default=None,
                        help="run only these QA pipelines (e.g. hybrid-k3-extractive-2x)")
    parser.add_argument("--code-problems", type=int, default=164, help="first N HumanEval problems")
    parser.add_argument("--code-parts", nargs="+", choices=["greedy", "pickers", "demos"],
                        default=["greedy", "pickers", "demos"])
    parser.add_argument("--demo-formats", nargs="+", choices=["chat", "completion"],
                        default=["chat", "completion"],
                        help="demonstration formats, run in this order")
    parser.add_argument("--demo-batch", type=int, default=16,
                        help="problems handed to vLLM at once in the demos part; a larger batch "
                             "keeps the engine busy while the longest answers finish")
    parser.add_argument("--lail-candidates", type=int, default=6, help="BM25 candidates LLM-scored per anchor")
    parser.add_argument("--skip", choices=["qa", "code"], default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "end_to_end", help="report folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where end_to_end.json goes")
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-end-to-end"),
                        help="indexes, cached generations, trained selectors and verifiers")
    args = parser.parse_args()
    setup = {
        dtype_section("qa", args.dtype): {
            "questions": f"first {args.questions} vital-qa questions (seed 0)", "model": args.model,
            "dtype": args.dtype, "corpus": "10,033 vital-article summaries, one chunk each",
            "max_tokens": args.max_tokens,
            "report": f"benchmarks/results/end_to_end/{dtype_section('qa', args.dtype)}/report.md"},
        dtype_section("code_greedy", args.dtype): {"problems": args.code_problems, "model": args.model,
                                     "dtype": args.dtype,
                                     "decoding": f"greedy, max {MAX_TOKENS} tokens, chat prompt"},
        dtype_section("code_pickers", args.dtype): {"problems": args.code_problems, "model": args.model, "dtype": args.dtype,
                         "samples": f"{SAMPLES} at T={TEMPERATURE}, seed 0, generated once",
                         "checks": "docstring examples + CodeT tests (2 replies x 5 asserts, T=0.8)",
                         "lever": f"{LEVER_FOLDS}-fold cross-validation by problem"},
        "code_demos": {"problems": args.code_problems, "model": args.model, "dtype": args.demo_dtype,
                       "shots": SHOTS, "batch": args.demo_batch,
                       "pool": "the other 163 HumanEval problems (leave-one-out)",
                       "lail": f"trained with {args.model}'s feedback (the target model), "
                               f"{args.lail_candidates} BM25 candidates per anchor, cross-fitted halves"},
    }
    sections: dict[str, list[dict]] = {}
    for name, part in (("code", code), ("qa", qa)):
        if args.skip != name:
            sections |= part(args)
            figures = summary(sections)  # this run's; a part skipped keeps its rows and figures
            write_results("end_to_end", {n: setup[n] for n in sections if n in setup}, sections,
                          folder=args.results, keep_other_sections=True,
                          summary={k: v for part in figures.values() for k, v in part.items()},
                          summary_sections={k: [s] for s, part in figures.items() for k in part})


if __name__ == "__main__":
    main()
