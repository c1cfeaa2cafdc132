"""Result files with provenance (command, commit, machine) and Markdown tables, for benchmarks."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


UNKNOWN_SOURCE = {"commit": "unknown", "command": "unknown"}


def summary_sources(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run (command, commit, date) that computed each summary key of a results file and the
    sections it was computed from: as recorded; for an older file of one run, that run; else
    unknown, since a file merged from several runs did not say which computed which key."""
    recorded = record.get("summary_sources", {})
    one_run = {f: record.get(f, "unknown") for f in ("command", "commit", "date")}
    return {k: recorded.get(k) or (UNKNOWN_SOURCE if "sections" in record else one_run)
            for k in record.get("summary", {})}


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows` (the keys of the first row are the columns)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(
            f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def write_results(
    name: str, setup: dict[str, Any], rows: list[dict[str, Any]] | dict[str, list[dict[str, Any]]],
    folder: Path | None = None, keep_other_sections: bool = False,
    summary: dict[str, Any] | None = None, summary_sections: dict[str, list[str]] | None = None,
) -> Path:
    """Write `benchmarks/results/NAME.json` with the command, machine and commit; print tables.

    `rows` is one table, or several by section name. The folder defaults to `results/` beside
    the running script, so `python benchmarks/x.py` writes `benchmarks/results/x.json` from anywhere.
    With `keep_other_sections`, sections of the existing file that this run did not produce are
    kept, each with its setup and the provenance of the run that made it (`sections`), so a
    benchmark's parts can be run one at a time; setup entries of no kept section are dropped.
    `summary` is the top-level object of headline figures that issues and readers check;
    `summary_sources` names the run that computed each key and the sections it was computed from
    (`summary_sections`, by default every section this run wrote). A key of an earlier run is
    kept only while none of its sections (all, where unknown) is rerun: a rerun that does not
    recompute it would leave it describing rows that are gone.
    """
    folder = folder or Path(sys.argv[0]).resolve().parent / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    run = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": git_commit(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    record = {"benchmark": name, **run, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "setup": setup, "results": rows}
    if summary is not None:
        made = list(rows) if isinstance(rows, dict) else []
        sources = {k: {**run, "sections": (summary_sections or {}).get(k, made)} for k in summary}
        record = {"summary": summary, "summary_sources": sources, **record}
    if keep_other_sections and isinstance(rows, dict) and path.exists():
        old = json.loads(path.read_text())
        if isinstance(old.get("results"), dict):
            before = old.get("sections") or {s: {k: old[k] for k in run} for s in old["results"]}
            kept = {s: r for s, r in old["results"].items() if s not in rows}
            record["results"] = {**kept, **rows}
            old_setup = old.get("setup", {})
            record["setup"] = {**{s: old_setup[s] for s in kept if s in old_setup}, **setup}
            record["sections"] = {**{s: before[s] for s in kept if s in before}, **{s: run for s in rows}}
            if "summary" in old:  # keys made by an earlier run of the kept parts stay
                old_sources, new = summary_sources(old), record.get("summary_sources", {})
                kept_keys = [k for k in old["summary"] if k not in new and not set(
                    old_sources[k].get("sections", old["results"])) & set(rows)]
                summary = {k: v for k, v in {**old["summary"], **(summary or {})}.items()
                           if k in kept_keys or k in new}
                sources = {k: new.get(k) or old_sources[k] for k in summary}
                record = {"summary": summary, "summary_sources": sources,
                          **{k: v for k, v in record.items()
                             if k not in ("summary", "summary_sources")}}
    path.write_text(json.dumps(record, indent=2) + "\n")
    shown = record["results"]
    for section, section_rows in (shown.items() if isinstance(shown, dict) else [("", shown)]):
        if section_rows:
            print(f"\n{section}\n" if section else "", table(section_rows), sep="")
    if summary:
        print("\nsummary\n" + table([{"key": k, "value": v} for k, v in summary.items()]))
    print(f"\nwritten to {path}")
    return path


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    """Median, min and max of repeated measurements: how a speed figure is reported here."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}
