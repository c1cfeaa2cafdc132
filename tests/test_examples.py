"""Every example script runs to completion on a small slice of the real data.

One script runs as users run it, in its own process, to check that an example exits cleanly and
stops the engine it started. The others run as `__main__` inside the test process, where they
share the session's vLLM engine through the component registry instead of each starting its own
(about a minute apiece on this CPU); they must leave no process running either.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
STANDALONE = "naive_rag.py"
# The first 400 articles hold both demo questions' articles; 12 evaluation questions suffice.
SMALL = {"RAG_EXAMPLE_DOCS": "400", "RAG_EXAMPLE_QUESTIONS": "12", "RAG_EXAMPLE_PROBLEMS": "3"}


def _proc_stats() -> dict[int, list[str]]:
    """The fields after the command name of every live process's /proc stat line, by pid."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            found[int(stat.parent.name)] = fields
    return found


def session_processes(session: int) -> list[int]:
    """Live processes of a session (ps's SID)."""
    return [pid for pid, fields in _proc_stats().items() if int(fields[3]) == session]


def descendants(root: int) -> set[int]:
    """Live processes below `root` (children, their children, ...)."""
    parents = {pid: int(fields[1]) for pid, fields in _proc_stats().items()}
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_for_exit(pids: Callable[[], Iterable[int]], seconds: float = 20) -> list[int]:
    """Helpers such as multiprocessing's resource tracker exit just after their parent: give
    them `seconds`, then return the ones `pids()` still lists."""
    deadline = time.monotonic() + seconds
    while (alive := list(pids())) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive


def run_standalone(script: Path) -> subprocess.CompletedProcess:
    """Run a script in its own session; whatever it leaves running is reported, then killed."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, **SMALL},
                                stdout=out, stderr=err, text=True, start_new_session=True)
        try:
            proc.wait(timeout=600)
            note = ""
        except subprocess.TimeoutExpired:
            proc.kill()
            note = "\nstill running after 600 s"
        leftovers = wait_for_exit(lambda: session_processes(proc.pid))
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        out.seek(0)
        err.seek(0)
        stderr = err.read() + note + (f"\nleft running: {leftovers}" if leftovers else "")
        failed = bool(note or leftovers)
        return subprocess.CompletedProcess(proc.args, 1 if failed else proc.returncode, out.read(), stderr)


def test_an_example_runs_standalone_and_stops_every_process_it_started():
    result = run_standalone(next(s for s in EXAMPLES if s.name == STANDALONE))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Q: " in result.stdout and "A: " in result.stdout


@pytest.mark.parametrize("script", [s for s in EXAMPLES if s.name != STANDALONE], ids=lambda p: p.name)
def test_example_runs(script: Path, vllm_tiny, vllm_tiny_kv, capsys, monkeypatch):
    """Runs to completion as `__main__` and stops every process it started (servers, engines)."""
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    vllm_tiny.engine  # started before the snapshot: the examples share it
    if script.name == "kv_reuse.py":
        vllm_tiny_kv.engine  # and this one, with the KV connector
    before = descendants(os.getpid())
    runpy.run_path(str(script), run_name="__main__")
    stdout = capsys.readouterr().out
    leftovers = wait_for_exit(lambda: descendants(os.getpid()) - before)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"{script.name} left processes running: {leftovers}"
    assert stdout.strip()
    if script.name == "serve_and_call.py":
        assert "answer: " in stdout and "Mona Lisa" in stdout
    if script.name == "kv_reuse.py":  # the vLLM rows loaded most of their prompt from the store
        loaded = [line.split("|")[-1].split()[0] for line in stdout.splitlines()
                  if "KV connector" in line or "demonstration KV, reuse" in line]
        assert len(loaded) == 3
        assert all(int(n) > int(d) / 2 for n, d in (x.split("/") for x in loaded))
    if script.name == "evaluate.py":
        assert "closed-book: F1" in stdout and "| naive-rag |" in stdout
    if script.name == "rerank_and_verify.py":
        assert "supported:" in stdout and "CodeT picks sample" in stdout
    if script.name == "late_chunking.py":  # the example's point: context helps "It" sentences
        recall = {line.split(":")[0].strip(): float(line.split()[2])
                  for line in stdout.splitlines() if "recall@10" in line}
        assert recall["late"] > recall["naive"]
