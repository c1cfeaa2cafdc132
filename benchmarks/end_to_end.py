"""End-to-end QA and code generation: closed-book against RAG, zero-shot against demonstrations.

QA: questions are "What is the name of the <Wikidata description>?" with the article title as
the gold answer (`rag.eval.datasets.vital_qa`, seed 0), over all 10,033 articles, one chunk
each. Pipelines: closed-book; naive RAG (dense HNSW, k=3); hybrid RAG (BM25 + dense, convex,
BM25 weight 0.3, k=3); hybrid k=3 with its passages compressed 2x (extractive); hybrid top 10
reranked by a LLM reranker to 3 (its cost grows with the depth: about 1 s per passage with
`bench` on a 2-core CPU, so top 10 rather than 20 to fit 500 questions in a session). The
instructions ask for the answer alone, as FlashRAG's do, so exact match measures the answer
rather than its phrasing. The report with plots goes to
benchmarks/results/end_to_end/ and the summary table to benchmarks/results/end_to_end.json.

Code: the first N HumanEval problems, greedy, zero-shot and with 2 demonstrations (prompt and
canonical solution, as earlier chat turns) chosen from the other 163 problems by kNN (MiniLM
over the prompts) and by LAIL. LAIL is cross-fitted: a selector trained with the LLM's feedback
on the even-numbered problems picks for the odd ones and the other way round, so no problem's
own program is ever a training target of the selector that picks its demonstrations. Then 10
samples per problem at T = 0.8 on the first M problems, one chosen by the best verifier of
`benchmarks/rerank_verify.py` (docstring examples passed, ties by mean token log-prob). The
code report goes to benchmarks/results/end_to_end/humaneval/.

    python benchmarks/end_to_end.py [--questions 500] [--model bench] [--reranker llm-pointwise]
                                    [--rerank-depth 10]
                                    [--code-problems 164] [--verify-problems 40] [--skip code]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rag.compression.stage import Compress
from rag.corpus import vital_articles
from rag.eval.datasets import CodeTask, humaneval, vital_qa
from rag.eval.harness import QA_COLUMNS, evaluate_code, evaluate_qa
from rag.eval.runner import leave_one_out_demos, run_code
from rag.eval.report import write_results
from rag.generators.stage import Generate
from rag.pipeline import Pipeline
from rag.prompts import ClosedBookPrompt, RagPrompt
from rag.registry import build
from rag.rerankers.stage import Rerank
from rag.recipes import document_chunks, hybrid_index
from rag.retrievers.stage import Retrieve
from rag.selectors.learned import load_selector, train_selector
from rag.selectors.prompt import DemoTemplate
from rag.types import Demo, SamplingParams
from rag.verifiers import Sandbox, execute
from rag.verifiers.code import doctest_examples, example_checks

RESULTS = Path(__file__).resolve().parent / "results"
# FlashRAG-style short-answer instructions, so exact match measures the answer, not its phrasing.
SHORT = "Give only the answer (a name), no other words."
RAG_SYSTEM = f"Answer the question using the numbered passages. {SHORT}"
CLOSED_BOOK_SYSTEM = f"Answer the question. {SHORT}"
# LAIL scores log P(program | example, task) on plain text: each solved function, then the task.
CODE_TEMPLATE = DemoTemplate(instruction="Complete each Python function.", input_prefix="",
                             output_prefix="", output_lead="")
SHOTS = 2


def pipelines(args: argparse.Namespace) -> dict[str, Pipeline]:
    dense, _, hybrid = hybrid_index(document_chunks(vital_articles()))
    generator = build("generator", {"type": "vllm", "model": args.model, "max_model_len": 4096})
    params = SamplingParams(max_tokens=args.max_tokens)
    answer = [RagPrompt(system=RAG_SYSTEM), Generate(generator, params)]
    reranker = {"type": args.reranker, "generator": generator.spec(), "max_words": 60}
    return {
        "closed-book": Pipeline([ClosedBookPrompt(system=CLOSED_BOOK_SYSTEM), Generate(generator, params)]),
        "naive-rag-dense-k3": Pipeline([Retrieve(dense, k=3), *answer]),
        "hybrid-rag-k3": Pipeline([Retrieve(hybrid, k=3), *answer]),
        "hybrid-k3-extractive-2x": Pipeline(
            [Retrieve(hybrid, k=3), Compress({"type": "extractive", "ratio": 2.0}), *answer]),
        f"hybrid-top{args.rerank_depth}-{args.reranker}-k3": Pipeline(
            [Retrieve(hybrid, k=args.rerank_depth), Rerank(reranker, k=3), *answer]),
    }


def qa(args: argparse.Namespace) -> list[dict]:
    examples = vital_qa(args.questions)
    summaries = evaluate_qa(pipelines(args), examples, args.out, dataset="vital-qa")
    return [{"configuration": name, **{c: round(s[c], 4) for c in QA_COLUMNS}}
            for name, s in summaries.items()]


def lail_demos(args: argparse.Namespace, tasks: list[CodeTask], pool: list[CodeTask],
               generator) -> dict[str, list[Demo]]:
    """Cross-fitted LAIL: the selector trained on one half of the tasks picks for the other."""
    if args.feedback_model != args.model:
        generator = build("generator", {"type": "vllm", "model": args.feedback_model, "max_model_len": 4096})
    work = args.work / f"lail-{args.feedback_model}"
    halves = [tasks[0::2], tasks[1::2]]
    demos: dict[str, list[Demo]] = {}
    for half, anchors in enumerate(halves):
        folder = work / f"trained-on-half-{half}"
        trained = train_selector("lail", [t.as_demo() for t in pool], [t.as_demo() for t in anchors],
                                 generator, folder, template=CODE_TEMPLATE,
                                 candidates=args.lail_candidates, scores_cache=work / "llm_scores.jsonl")
        print(f"LAIL half {half}: {trained.llm_scored} LLM scorings in {trained.scoring_seconds:.0f} s, "
              f"training {trained.training_seconds:.0f} s", flush=True)
        demos.update(leave_one_out_demos(load_selector(folder), halves[1 - half], pool, SHOTS))
    return demos


def verified_pass1(args: argparse.Namespace, tasks: list[CodeTask], generator) -> list[dict]:
    """Unbiased pass@1 of 10 samples, and pass@1 of the one the docstring examples pick."""
    tasks = tasks[: args.verify_problems]
    predictions = run_code(generator, tasks, args.out / "humaneval" / "sampled", samples=10,
                           temperature=0.8)
    sandbox, picked = Sandbox(), []
    for task, prediction in zip(tasks, predictions):
        runs = execute(sandbox, prediction.programs, example_checks(doctest_examples(task.prompt)))
        logprobs = [-math.inf if lp is None else lp for lp in prediction.logprobs]
        best = max(range(len(runs)), key=lambda i: (sum(runs[i].passed), logprobs[i]))
        picked.append(prediction.passed[best])
    n = len(tasks)
    return [{"configuration": "10 samples at T=0.8, unbiased pass@1", "problems": n,
             "pass@1": round(sum(sum(p.passed) / len(p.passed) for p in predictions) / n, 4)},
            {"configuration": "10 samples, verifier's pick (docstring examples)", "problems": n,
             "pass@1": round(sum(picked) / n, 4)}]


def code(args: argparse.Namespace) -> list[dict]:
    pool = humaneval()
    tasks = pool[: args.code_problems]
    generator = build("generator", {"type": "vllm", "model": args.model, "max_model_len": 4096})
    demos = {f"knn-{SHOTS}shot": leave_one_out_demos(build("selector", {"type": "knn"}), tasks, pool, SHOTS),
             f"lail-{SHOTS}shot": lail_demos(args, tasks, pool, generator)}
    summaries = evaluate_code({"zero-shot": generator, **{name: generator for name in demos}}, tasks,
                              args.out / "humaneval", demos=demos)
    rows = [{"configuration": f"greedy, {name}", "problems": s["examples"], "pass@1": round(s["pass@1"], 4)}
            for name, s in summaries.items()]
    return rows + (verified_pass1(args, tasks, generator) if args.verify_problems else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--reranker", default="llm-pointwise")
    parser.add_argument("--rerank-depth", type=int, default=10, help="hybrid hits the reranker reorders")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--code-problems", type=int, default=164, help="first N HumanEval problems")
    parser.add_argument("--verify-problems", type=int, default=40, help="of those, sampled 10 times (0: none)")
    parser.add_argument("--lail-candidates", type=int, default=8, help="BM25 candidates LLM-scored per anchor")
    parser.add_argument("--feedback-model", default=None,
                        help="LLM whose log P(program | demonstration, task) trains LAIL (default: --model)")
    parser.add_argument("--skip", choices=["qa", "code"], default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "end_to_end", help="report folder")
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-end-to-end"),
                        help="LLM scores and trained selectors")
    args = parser.parse_args()
    args.feedback_model = args.feedback_model or args.model
    setup = {
        "qa": {"questions": f"first {args.questions} vital-qa questions (seed 0)", "model": args.model,
               "corpus": "10,033 vital-article summaries, one chunk each", "max_tokens": args.max_tokens,
               "instructions": {"rag": RAG_SYSTEM, "closed_book": CLOSED_BOOK_SYSTEM},
               "report": "benchmarks/results/end_to_end/report.md"},
        "code": {"problems": f"first {args.code_problems} HumanEval problems", "model": args.model,
                 "decoding": "greedy, max 384 tokens",
                 "demonstrations": f"{SHOTS} from the other problems: kNN (MiniLM), and LAIL cross-fitted "
                                   f"over halves, {args.lail_candidates} BM25 candidates per anchor "
                                   f"scored by {args.feedback_model}",
                 "verifier": f"10 samples at T=0.8 on the first {args.verify_problems}, "
                             "pick by docstring examples passed",
                 "report": "benchmarks/results/end_to_end/humaneval/report.md"},
    }
    sections = {}
    for name, part in (("code", code), ("qa", qa)):
        if args.skip != name:
            sections[name] = part(args)
            # after each part; a part skipped keeps its rows and setup from an earlier run
            write_results("end_to_end", {n: setup[n] for n in sections}, sections, keep_other_sections=True)


if __name__ == "__main__":
    main()
