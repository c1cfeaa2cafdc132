"""Run untrusted Python, such as LLM-written programs, without risk to the host.

Each run gets a clean environment and `python -I`, and is locked down by independent layers
(`rag.verifiers.sandbox_layers`), so one missing layer is not a hole:

- rlimits: CPU seconds, address space, file size, open files (set by `sandbox_runner.py` before
  the untrusted code runs, and inherited by anything it starts);
- seccomp: no signals to other processes, no IPv4/IPv6 sockets, no set-user-ID files, no mounts
  or namespaces, and no new processes unless allowed; unlike RLIMIT_NPROC this binds root too;
- namespaces (`unshare`): a network namespace with no interface up, and a PID namespace in which
  no host process is visible;
- filesystem (bubblewrap): the program sees only read-only system libraries and the Python
  install, a private tmpfs working directory and `/tmp` of `scratch_mb` each, its own `/proc` and
  a minimal `/dev`; no home folder, no `/etc`, no checkout, no model cache;
- a wall-clock timeout that kills the whole process group, and output capped at a size.

The program runs under the base interpreter with the standard library only: a virtual
environment's packages are not visible. `isolation="strict"` (the default) refuses to run when a
requested layer is unavailable, with an error that says how to install it; `"best_effort"` runs
with the layers this machine has. `Sandbox.protections` names the layers in force.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from rag.errors import BackendUnavailableError
from rag.verifiers import sandbox_layers as layers

RUNNER = Path(__file__).with_name("sandbox_runner.py")
Status = Literal["ok", "error", "timeout", "killed"]
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b")
# Layers a run may ask for, in the order `Sandbox.protections` names them, with their checks.
OPTIONAL_LAYERS = {
    "seccomp": layers.seccomp_available,
    "namespaces": layers.namespaces_available,
    "filesystem": layers.filesystem_available,
}


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
    filesystem: bool = Field(default=True, description="bubblewrap filesystem layer")
    scratch_mb: int = Field(
        default=64, ge=1, description="size of the private working directory and of /tmp, each"
    )
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


def _read(f: IO[bytes], limit: int) -> str:
    """Read what the program wrote from our own open file, never by path: the program may have
    replaced the path with a link to a host file."""
    f.seek(0)
    return f.read(limit).decode("utf-8", errors="replace")


def _child_returncode(fd: int) -> int | None:
    """The exit code the runner reported (negative: killed by that signal); None if it could not."""
    os.set_blocking(fd, False)
    try:
        with os.fdopen(fd, "rb") as f:
            return int(json.loads(f.read() or b"null")["returncode"])
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
        for name, available in OPTIONAL_LAYERS.items():
            if getattr(self.limits, name):
                (have if available() else missing).append(name)
        if missing and self.limits.isolation == "strict":
            hints = "; ".join(layers.INSTALL_HINT[name] for name in missing)
            raise BackendUnavailableError(
                f"the sandbox cannot enable {' and '.join(missing)} on this machine ({hints}). "
                "Pass isolation='best_effort' to run without them, or turn the layer off explicitly."
            )
        return have

    def _command(self, run_dir: Path, status_fd: int) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of one run whose program is `run_dir/main.py`."""
        lim = self.limits
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
        prefix = layers.namespace_command() if "namespaces" in self.protections else []
        if "filesystem" in self.protections:
            fs_args, python, fs_env = layers.filesystem_command(run_dir, lim.scratch_mb)
            prefix += fs_args
            env |= (fs_env or {}) | {"HOME": layers.SANDBOX_WORKDIR, "TMPDIR": "/tmp"}
            program, runner = f"{layers.SANDBOX_RUN}/main.py", f"{layers.SANDBOX_RUN}/runner.py"
        else:
            python = layers.host_python()
            env |= {"HOME": str(run_dir), "TMPDIR": str(run_dir)}
            program, runner = str(run_dir / "main.py"), str(run_dir / "runner.py")
        bpf = layers.seccomp_filter(lim.allow_subprocesses) if "seccomp" in self.protections else b""
        settings = {
            "cpu_seconds": lim.cpu_seconds,
            "memory_mb": lim.memory_mb,
            "file_size_mb": lim.file_size_mb,
            "open_files": lim.open_files,
            "processes": lim.processes,
            "allow_subprocesses": lim.allow_subprocesses,
            "seccomp_bpf": bpf.hex(),
            "status_fd": status_fd,
            "program": program,
        }
        return [*prefix, python, "-I", "-B", runner, json.dumps(settings)], env

    def run(self, code: str) -> ExecResult:
        """Run `code` as `__main__` in a fresh directory; never raises for what the code does."""
        with (
            tempfile.TemporaryDirectory(prefix="rag-sandbox-") as tmp,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            run_dir = Path(tmp)
            (run_dir / "main.py").write_text(code, encoding="utf-8")
            (run_dir / "runner.py").write_bytes(RUNNER.read_bytes())
            status_read, status_write = os.pipe()
            command, env = self._command(run_dir, status_write)
            start = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    command, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    start_new_session=True, pass_fds=(status_write,),
                )
            finally:
                os.close(status_write)
            timed_out = False
            try:
                proc.wait(timeout=self.limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            seconds = time.perf_counter() - start
            keep = self.limits.max_output_chars
            returncode = _child_returncode(status_read)
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
