"""Evaluate several configurations on one data set and write a side-by-side report.

`<out>/results.json` holds every configuration's summary with provenance; `<out>/report.md` a
Markdown table and the plots (`quality.png`, `latency.png`, `recall.png`); `<out>/<name>/`
the resumable predictions of each configuration.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.eval.datasets import CodeTask, QAExample
from rag.eval.plots import latency_breakdown, metric_bars, recall_curves
from rag.eval.report import git_commit, table
from rag.eval.runner import BatchRunner, in_process, run_code, run_qa, summarize_code, summarize_qa
from rag.pipeline import Pipeline
from rag.storage import atomic_write_json, atomic_write_text

QA_COLUMNS = ("em", "f1", "acc", "seconds_per_query", "prompt_tokens", "completion_tokens")


def _write(out: Path, dataset: str, summaries: dict[str, dict[str, Any]], rows: list[dict[str, Any]],
           plots: list[Path | None]) -> None:
    atomic_write_json(out / "results.json", {
        "dataset": dataset, "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "configurations": summaries,
    })
    lines = [f"# Evaluation on {dataset}", "", table(rows), ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots if p is not None]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def evaluate_qa(
    pipelines: dict[str, Pipeline], examples: Sequence[QAExample], out: str | Path,
    dataset: str = "qa", batch_size: int = 16, progress: bool = True,
    runner: BatchRunner = in_process,
) -> dict[str, dict[str, Any]]:
    """Run each named pipeline on the examples (resumably) and write the report."""
    out = Path(out)
    summaries = {}
    for name, pipeline in pipelines.items():
        predictions = run_qa(pipeline, examples, out / name, batch_size, progress, runner=runner)
        summaries[name] = summarize_qa(examples, predictions)
    rows = [{"configuration": n, **{c: round(s[c], 4) for c in QA_COLUMNS}} for n, s in summaries.items()]
    plots = [metric_bars(summaries, ["em", "f1", "acc"], out / "quality.png"),
             latency_breakdown(summaries, out / "latency.png"), recall_curves(summaries, out / "recall.png")]
    _write(out, dataset, summaries, rows, plots)
    return summaries


def evaluate_code(
    pipelines: dict[str, Pipeline], tasks: Sequence[CodeTask], out: str | Path,
    batch_size: int = 16, progress: bool = True, runner: BatchRunner = in_process,
) -> dict[str, dict[str, Any]]:
    """The pass rate of each named code pipeline's answer, and pass@k over the programs it
    sampled; hidden tests run in the sandbox."""
    out = Path(out)
    summaries = {}
    for name, pipeline in pipelines.items():
        predictions = run_code(pipeline, tasks, out / name, batch_size, progress, runner=runner)
        summaries[name] = summarize_code(predictions)
    metrics = ["answer_pass", *sorted({k for s in summaries.values() for k in s if k.startswith("pass@")})]
    rows = [{"configuration": n, **{k: round(s[k], 4) for k in metrics if k in s}}
            for n, s in summaries.items()]
    _write(out, "humaneval", summaries, rows, [metric_bars(summaries, metrics, out / "quality.png")])
    return summaries
