"""HumanEval with demonstrations: each problem shown 2 solved problems picked from the others.

    python examples/code_demos.py                 # 6 problems, tiny model
    RAG_EXAMPLE_PROBLEMS=40 RAG_EXAMPLE_MODEL=bench python examples/code_demos.py

The same from the command line:

    rag eval --dataset humaneval --limit 6 --model tiny --selector knn --shots 2 --out he-icl
"""

import os
import tempfile

from rag.eval.datasets import humaneval
from rag.eval.harness import evaluate_code
from rag.eval.runner import leave_one_out_demos
from rag.registry import build


def main() -> None:
    pool = humaneval()  # all 164 problems with their solutions are the demonstration pool
    tasks = pool[: int(os.environ.get("RAG_EXAMPLE_PROBLEMS", "6"))]
    generator = build("generator", {"type": "vllm", "model": os.environ.get("RAG_EXAMPLE_MODEL", "tiny")})
    # Leave-one-out: a selector never returns the pool entry that is the query itself.
    demos = leave_one_out_demos(build("selector", {"type": "knn"}), tasks, pool, shots=2)
    print(f"{tasks[0].id} is shown: {', '.join(d.id for d in demos[tasks[0].id])}")
    with tempfile.TemporaryDirectory() as out:
        summaries = evaluate_code({"zero-shot": generator, "knn-2shot": generator}, tasks, out,
                                  demos={"knn-2shot": demos}, max_tokens=256)
    for name, summary in summaries.items():
        print(f"{name}: pass@1 {summary['pass@1']:.3f} on {summary['examples']} problems")


if __name__ == "__main__":  # vLLM starts worker processes: keep engine start-up under main
    main()
