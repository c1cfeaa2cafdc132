"""The sandbox: the cost of the filesystem layer, the attacks it contains, HumanEval verdicts.

    python benchmarks/sandbox.py [--repeat 3] [--workers 2]

- throughput: the 164 HumanEval canonical solutions with their tests through `run_many`, with
  every layer and with the filesystem layer off, alternating, `--repeat` times in one run;
  programs per second as median/min/max and the ratio per repetition.
- attacks: every attack of `rag.verifiers.attacks` against the default `Sandbox()`.
- verdicts: the 164 canonical solutions pass, and the 164 greedy `bench` programs recorded in
  `benchmarks/results/end_to_end/humaneval/zero-shot/` get the verdicts they got before.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rag.eval.datasets import humaneval
from rag.eval.report import spread, write_results
from rag.verifiers import Sandbox, run_unit_tests
from rag.verifiers.attacks import try_attacks

GREEDY = Path(__file__).parent / "results/end_to_end/humaneval/zero-shot/predictions.jsonl"


def throughput(sandbox: Sandbox, programs: list[str], workers: int) -> float:
    began = time.perf_counter()
    results = sandbox.run_many(programs, workers=workers, progress=False)
    seconds = time.perf_counter() - began
    if not all(r.passed for r in results):
        raise RuntimeError(f"a canonical solution failed under {sandbox.protections}")
    return len(programs) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="default: CPU count")
    args = parser.parse_args()
    tasks = humaneval()
    programs = [f"{t.prompt}{t.canonical_solution}\n\n{t.test}\n\ncheck({t.entry_point})\n"
                for t in tasks]
    with_fs, without_fs = Sandbox(), Sandbox(filesystem=False)
    runs = {"with": [], "without": []}
    for _ in range(args.repeat):
        runs["without"].append(throughput(without_fs, programs, args.workers))
        runs["with"].append(throughput(with_fs, programs, args.workers))
    ratios = [w / wo for w, wo in zip(runs["with"], runs["without"])]
    speed_rows = [
        {"sandbox": "every layer", "layers": " + ".join(with_fs.protections),
         **{f"programs_per_s_{k}": v for k, v in spread(runs["with"], 1).items()}},
        {"sandbox": "without the filesystem layer", "layers": " + ".join(without_fs.protections),
         **{f"programs_per_s_{k}": v for k, v in spread(runs["without"], 1).items()}},
    ]

    outcomes = try_attacks(Sandbox())
    attack_rows = [{"attack": o.name, "layer": o.layer, "status": o.status,
                    "contained": o.contained, "damage": "; ".join(o.damage) or "none"}
                   for o in outcomes]

    greedy = {r["id"]: r for r in map(json.loads, GREEDY.read_text().splitlines())}
    canonical_pass = same_verdict = 0
    for task in tasks:
        record = greedy[task.id]
        checked = run_unit_tests(with_fs, [task.prompt + task.canonical_solution,
                                           *record["programs"]], task.test, task.entry_point)
        canonical_pass += checked[0].passed
        same_verdict += [r.passed for r in checked[1:]] == record["passed"]
    verdict_rows = [{"check": "canonical solutions pass", "count": f"{canonical_pass}/{len(tasks)}"},
                    {"check": "greedy bench programs keep their verdict",
                     "count": f"{same_verdict}/{len(tasks)}"}]

    ratio = spread(ratios)
    write_results(
        "sandbox",
        {"workload": f"{len(programs)} HumanEval canonical solutions with their tests",
         "repeat": args.repeat, "workers": args.workers or "CPU count",
         "limits": with_fs.limits.model_dump()},
        {"throughput": speed_rows, "attacks": attack_rows, "humaneval": verdict_rows},
        summary={
            "fs_layer_throughput_ratio": ratio["median"],
            "fs_layer_throughput_ratio_min": ratio["min"],
            "fs_layer_throughput_ratio_max": ratio["max"],
            "attacks_tried": len(outcomes),
            "attacks_contained": sum(o.contained for o in outcomes),
            "canonical_pass": canonical_pass,
            "greedy_same_verdict": same_verdict,
            "humaneval_problems": len(tasks),
        },
    )


if __name__ == "__main__":
    main()
