"""Result files with provenance (command, commit, machine) and Markdown tables, for benchmarks."""

from __future__ import annotations

import json
import platform
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
    folder: Path | None = None,
) -> Path:
    """Write `benchmarks/results/NAME.json` with the command, machine and commit; print tables.

    `rows` is one table, or several by section name. The folder defaults to `results/` beside
    the running script, so `python benchmarks/x.py` writes `benchmarks/results/x.json` from anywhere.
    """
    folder = folder or Path(sys.argv[0]).resolve().parent / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    record = {
        "benchmark": name, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "setup": setup, "results": rows,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    for section, section_rows in (rows.items() if isinstance(rows, dict) else [("", rows)]):
        if section_rows:
            print(f"\n{section}\n" if section else "", table(section_rows), sep="")
    print(f"\nwritten to {path}")
    return path
