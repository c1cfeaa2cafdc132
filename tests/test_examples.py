"""Every example script runs to completion on a small slice of the real data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
# The first 400 articles hold both demo questions' articles; 12 evaluation questions suffice.
SMALL = {"RAG_EXAMPLE_DOCS": "400", "RAG_EXAMPLE_QUESTIONS": "12"}


def session_processes(session: int) -> list[int]:
    """Live processes of a session (ps's SID), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def run_example(script: Path) -> subprocess.CompletedProcess:
    """Run a script in its own session; whatever it leaves running is reported, then killed."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, **SMALL},
                                stdout=out, stderr=err, text=True, start_new_session=True)
        try:
            proc.wait(timeout=600)
        finally:
            # Helpers such as multiprocessing's resource tracker exit just after their parent.
            deadline = time.monotonic() + 20
            while (leftovers := session_processes(proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.5)
            for pid in leftovers:
                os.kill(pid, signal.SIGKILL)
        out.seek(0)
        err.seek(0)
        stderr = err.read() + (f"\nleft running: {leftovers}" if leftovers else "")
        return subprocess.CompletedProcess(proc.args, 1 if leftovers else proc.returncode, out.read(), stderr)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path):
    """Runs to completion, and stops every process it started (vLLM engines, servers)."""
    result = run_example(script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()
    if script.name == "naive_rag.py":
        assert "Q: " in result.stdout and "A: " in result.stdout
    if script.name == "serve_and_call.py":
        assert "answer: " in result.stdout and "Mona Lisa" in result.stdout
    if script.name == "evaluate.py":
        assert "closed-book: F1" in result.stdout and "| naive-rag |" in result.stdout
    if script.name == "rerank_and_verify.py":
        assert "supported:" in result.stdout and "CodeT picks sample" in result.stdout
    if script.name == "late_chunking.py":  # the example's point: context helps "It" sentences
        recall = {line.split(":")[0].strip(): float(line.split()[2])
                  for line in result.stdout.splitlines() if "recall@10" in line}
        assert recall["late"] > recall["naive"]
