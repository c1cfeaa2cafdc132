"""PNG plots for evaluation reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def _finish(plt: Any, fig: Any, ax: Any, title: str, path: Path) -> Path:
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_bars(summaries: dict[str, dict[str, Any]], metrics: list[str], path: Path) -> Path:
    """One group of bars per configuration, one bar per metric."""
    plt = _pyplot()
    names = list(summaries)
    width = 0.8 / max(len(metrics), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names)), 3.6))
    for i, metric in enumerate(metrics):
        values = [summaries[n].get(metric, 0.0) for n in names]
        ax.bar([x + i * width for x in range(len(names))], values, width, label=metric)
    ax.set_xticks([x + width * (len(metrics) - 1) / 2 for x in range(len(names))], names,
                  rotation=20, ha="right")
    ax.set_ylim(0, 1)
    return _finish(plt, fig, ax, "quality per configuration", path)


def latency_breakdown(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """Stacked seconds per query by pipeline stage."""
    plt = _pyplot()
    names = list(summaries)
    stages = list(dict.fromkeys(s for n in names for s in summaries[n].get("stage_seconds", {})))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names)), 3.6))
    bottom = [0.0] * len(names)
    for stage in stages:
        values = [summaries[n].get("stage_seconds", {}).get(stage, 0.0) for n in names]
        ax.bar(names, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("seconds per query")
    ax.tick_params(axis="x", rotation=20)
    return _finish(plt, fig, ax, "latency by stage", path)


def recall_curves(summaries: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Recall of the gold document at k, per configuration that retrieves."""
    curves = {n: s["recall@k"] for n, s in summaries.items() if s.get("recall@k")}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, curve in curves.items():
        ks = sorted(int(k) for k in curve)
        ax.plot(ks, [curve[k] if k in curve else curve[str(k)] for k in ks], marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1)
    return _finish(plt, fig, ax, "gold document in the top k", path)
