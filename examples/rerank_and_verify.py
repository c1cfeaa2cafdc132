"""Rerank retrieved passages, check answers against them, and pick generated code by tests.

1. RAG with a reranker and a grounding check: retrieve 8 passages, let FIRST (single-token
   listwise) reorder them, keep 3, answer, and mark whether the passages support the answer.
2. Code: a pipeline samples programs for a HumanEval problem, runs them in the sandbox on the
   docstring's examples, and picks one by CodeT agreement.

    python examples/rerank_and_verify.py
    RAG_EXAMPLE_DOCS=400 python examples/rerank_and_verify.py
"""

import os
import tempfile

from rag.corpus import vital_articles
from rag.generators.stage import Generate
from rag.eval.datasets import humaneval
from rag.pipeline import Pipeline
from rag.prompts import RagPrompt
from rag.recipes import code_generation, index_corpus
from rag.registry import build
from rag.rerankers.stage import Rerank
from rag.retrievers.stage import Retrieve
from rag.state import State
from rag.types import SamplingParams
from rag.verifiers import Sandbox, run_unit_tests
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
    """A code pipeline: 6 samples, run on the docstring's examples, one picked by CodeT."""
    task = humaneval(1)[0]
    pipeline = code_generation(generator, samples=6, temperature=0.8, picker="codet", max_tokens=256)
    (state,) = pipeline.run([State(query=task.prompt, entry_point=task.entry_point)])
    chosen = state.trace[-1].info["chosen"]
    hidden = run_unit_tests(Sandbox(), [p.code for p in state.programs], task.test, task.entry_point)
    print(f"{task.id}: docstring checks passed per sample {[sum(e.passed) for e in state.executions]}")
    print(f"   CodeT picks sample {chosen}; hidden tests pass: {hidden[chosen].passed} "
          f"({sum(r.passed for r in hidden)}/{len(hidden)} samples pass)")


def main() -> None:
    generator = build("generator", {"type": "vllm", "model": "tiny"})
    rag_with_checks(generator)
    code_with_checks(generator)


if __name__ == "__main__":  # vLLM starts worker processes: keep engine start-up under main
    main()
