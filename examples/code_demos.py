"""HumanEval as pipelines: zero-shot, and each problem shown 2 solved problems picked from the others.

    python examples/code_demos.py                 # 6 problems, tiny model
    RAG_EXAMPLE_PROBLEMS=40 RAG_EXAMPLE_MODEL=bench python examples/code_demos.py

The same from the command line, with pipeline files:

    rag init code --out code.yaml                 # 10 samples, picked by docstring examples
    rag eval --dataset humaneval --limit 6 --pipeline code.yaml --out he
"""

import os
import tempfile
from pathlib import Path

from rag.eval.datasets import humaneval
from rag.eval.harness import evaluate_code
from rag.recipes import code_generation
from rag.selectors import write_demos


def main() -> None:
    pool = humaneval()  # all 164 problems with their solutions are the demonstration pool
    tasks = pool[: int(os.environ.get("RAG_EXAMPLE_PROBLEMS", "6"))]
    generator = {"type": "vllm", "model": os.environ.get("RAG_EXAMPLE_MODEL", "tiny")}
    with tempfile.TemporaryDirectory() as out:
        pool_file = write_demos(Path(out) / "pool.jsonl", [t.as_demo() for t in pool])
        # Leave-one-out for free: a selector never returns the pool entry that is the query itself.
        pipelines = {"zero-shot": code_generation(generator, max_tokens=256),
                     "knn-2shot": code_generation(generator, pool=pool_file, shots=2, max_tokens=256)}
        print(pipelines["knn-2shot"].to_yaml())
        summaries = evaluate_code(pipelines, tasks, out)
    for name, summary in summaries.items():
        print(f"{name}: pass@1 {summary['answer_pass']:.3f} on {summary['examples']} problems")


if __name__ == "__main__":  # vLLM starts worker processes: keep engine start-up under main
    main()
