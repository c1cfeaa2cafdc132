"""Run untrusted Python, such as LLM-written programs, without risk to the host process.

Each run gets a fresh temp dir as working directory, a clean environment and `python -I`, and is
locked down by independent layers, so one missing layer is not a hole:

- rlimits: CPU seconds, address space, file size, open files (set by `sandbox_runner.py` before
  the untrusted code runs, and inherited by anything it starts);
- seccomp (libseccomp via pyseccomp): no signals to other processes, no IPv4/IPv6 sockets, and no
  new processes unless allowed; unlike RLIMIT_NPROC this binds root too;
- Linux namespaces via `unshare`: a network namespace with no interface up, and a PID namespace
  in which no host process is visible;
- a wall-clock timeout that kills the whole process group, and output capped at a size.

`isolation="strict"` (the default) refuses to run when a requested layer (seccomp, namespaces) is
unavailable; `"best_effort"` runs with the layers this machine has. `Sandbox.protections` names
the layers in force.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from rag.errors import BackendUnavailableError

RUNNER = Path(__file__).with_name("sandbox_runner.py")
NAMESPACE_FLAGS = ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child")
Status = Literal["ok", "error", "timeout", "killed"]
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b")


class SandboxLimits(BaseModel):
    """What one run may use. Defaults suit unit-test-sized programs."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=10.0, gt=0, description="wall clock, start-up included")
    cpu_seconds: int = Field(default=5, ge=1)
    memory_mb: int = Field(default=1024, ge=64, description="address space")
    file_size_mb: int = Field(default=16, ge=1, description="largest file it may write")
    open_files: int = Field(default=64, ge=8)
    allow_subprocesses: bool = False
    processes: int = Field(
        default=16, ge=1, description="RLIMIT_NPROC when subprocesses are allowed (not for root)"
    )
    max_output_chars: int = Field(default=10_000, ge=0, description="stdout/stderr kept per run")
    seccomp: bool = Field(default=True, description="syscall filter layer")
    namespaces: bool = Field(default=True, description="network and PID namespace layer")
    isolation: Literal["strict", "best_effort"] = Field(
        default="strict", description="strict: refuse to run when a requested layer is unavailable"
    )


class ExecResult(BaseModel):
    """How one run ended."""

    status: Status
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    seconds: float
    signal: str | None = Field(default=None, description="the signal that ended it, if any")
    exception: str | None = Field(
        default=None, description="exception type on the last line of a traceback, if any"
    )

    @property
    def passed(self) -> bool:
        return self.status == "ok"


@cache
def namespaces_available() -> bool:
    """Whether this machine lets us create user, network and PID namespaces."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, *NAMESPACE_FLAGS, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@cache
def seccomp_available() -> bool:
    """Whether libseccomp and its ctypes binding load here."""
    try:
        import pyseccomp

        pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    except Exception:  # noqa: BLE001 - missing module, missing libseccomp.so, or no seccomp
        return False
    return True


def _read(path: Path, limit: int) -> str:
    with path.open("rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")


def _child_returncode(path: Path) -> int | None:
    """The exit code the runner recorded (negative: killed by that signal); None if it could not."""
    try:
        return int(json.loads(path.read_text())["returncode"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _exception_type(stderr: str) -> str | None:
    for line in reversed(stderr.strip().splitlines()[-3:]):
        if match := _EXCEPTION_LINE.match(line):
            return match.group(1).rsplit(".", 1)[-1]
    return None


class Sandbox:
    """Runs Python source in locked-down subprocesses, one or many at a time."""

    def __init__(self, limits: SandboxLimits | None = None, **overrides: object) -> None:
        base = limits or SandboxLimits()
        self.limits = SandboxLimits.model_validate({**base.model_dump(), **overrides})
        self.protections = self._protections()

    def _protections(self) -> list[str]:
        have = ["rlimits", "timeout"]
        missing = []
        for name, available in (("seccomp", seccomp_available), ("namespaces", namespaces_available)):
            if getattr(self.limits, name):
                (have if available() else missing).append(name)
        if missing and self.limits.isolation == "strict":
            raise BackendUnavailableError(
                f"the sandbox cannot enable {' and '.join(missing)} on this machine "
                "(seccomp needs libseccomp and pyseccomp; namespaces need `unshare` and "
                "unprivileged user namespaces). Pass isolation='best_effort' to run without them, or turn "
                "the layer off explicitly."
            )
        return have

    def _command(self) -> list[str]:
        lim = self.limits
        settings = {
            "cpu_seconds": lim.cpu_seconds,
            "memory_mb": lim.memory_mb,
            "file_size_mb": lim.file_size_mb,
            "open_files": lim.open_files,
            "processes": lim.processes,
            "allow_subprocesses": lim.allow_subprocesses,
            "seccomp": "seccomp" in self.protections,
        }
        prefix = ["unshare", *NAMESPACE_FLAGS] if "namespaces" in self.protections else []
        return [*prefix, sys.executable, "-I", "-B", str(RUNNER), json.dumps(settings)]

    def run(self, code: str) -> ExecResult:
        """Run `code` as `__main__` in a fresh directory; never raises for what the code does."""
        with tempfile.TemporaryDirectory(prefix="rag-sandbox-") as tmp:
            folder = Path(tmp)
            (folder / "main.py").write_text(code, encoding="utf-8")
            env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
                   "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
            out, err = folder / ".stdout", folder / ".stderr"
            start = time.perf_counter()
            with out.open("wb") as stdout, err.open("wb") as stderr:
                proc = subprocess.Popen(
                    self._command(), cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                    stdout=stdout, stderr=stderr, start_new_session=True,
                )
                timed_out = False
                try:
                    proc.wait(timeout=self.limits.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            seconds = time.perf_counter() - start
            keep = self.limits.max_output_chars
            returncode = _child_returncode(folder / ".status")
            return self._result(returncode, timed_out, seconds, _read(out, keep), _read(err, keep))

    @staticmethod
    def _result(
        code: int | None, timed_out: bool, seconds: float, stdout: str, stderr: str
    ) -> ExecResult:
        sig = signal.Signals(-code).name if code is not None and code < 0 else None
        if timed_out or sig == "SIGXCPU":
            status: Status = "timeout"
        elif code is None or sig is not None:
            status = "killed"
        else:
            status = "ok" if code == 0 else "error"
        return ExecResult(
            status=status, returncode=code, stdout=stdout, stderr=stderr, seconds=seconds,
            signal=sig, exception=_exception_type(stderr) if status == "error" else None,
        )

    def run_many(
        self, codes: Sequence[str], workers: int | None = None, progress: bool = True
    ) -> list[ExecResult]:
        """Run programs in parallel, at most `workers` (default: CPU count) at once, in order."""
        workers = workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(self.run, codes)
            bar = tqdm(results, total=len(codes), desc="sandbox", disable=not progress or len(codes) < 16)
            return list(bar)
