"""The sandbox's independent protection layers: what each needs, and the command words it adds.

- seccomp: a syscall filter compiled here with libseccomp (pyseccomp) into classic BPF; the
  runner loads the bytes with `prctl`, so the sandboxed side needs neither library.
- namespaces: `unshare` makes a user, network and PID namespace (no interface up, no host PID).
- filesystem: bubblewrap (`bwrap`, the sandbox Flatpak uses) builds a mount namespace whose root
  holds only read-only system libraries and the Python install, a private tmpfs working directory
  and `/tmp`, a fresh `/proc` and a minimal `/dev`; capabilities are dropped. We chose bubblewrap
  over hand-written mount code because it is small, audited and packaged everywhere, and over
  Landlock because Landlock can only deny access to paths, not hide them, and needs a recent
  kernel ABI for every rule kind.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

NAMESPACE_FLAGS = ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child")
# Where the Python install appears inside the filesystem layer when it lives outside the system
# directories (pyenv, conda, a home folder): the host path would reveal and need that folder.
SANDBOX_PYTHON = "/opt/python"
SANDBOX_RUN = "/sandbox"  # the program and the runner, read-only
SANDBOX_WORKDIR = "/work"  # private tmpfs, the program's working directory and HOME
SYSTEM_DIRS = ("/usr/bin", "/usr/lib", "/usr/lib64")
# clone() flag that marks a new thread rather than a new process.
CLONE_THREAD = 0x00010000
SETID_BITS = (0o4000, 0o2000)  # S_ISUID, S_ISGID
# Syscalls that only serve to escape or inspect: binding, mounting, joining namespaces, tracing.
ESCAPE_SYSCALLS = ("mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "ptrace", "bpf")
# Where each mode argument sits: a file created or changed to set-user-ID is refused.
MODE_ARGUMENT = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "open": 2, "openat": 3, "creat": 1,
                 "mknod": 1, "mknodat": 2}

INSTALL_HINT = {
    "seccomp": "seccomp needs libseccomp (apt-get install libseccomp2) and the pyseccomp package",
    "namespaces": "namespaces need `unshare` (util-linux) and unprivileged user namespaces",
    "filesystem": "the filesystem layer needs bubblewrap: `apt-get install bubblewrap` (Debian, "
                  "Ubuntu), `dnf install bubblewrap` (Fedora) or `make setup` as root",
}


def _runs(command: list[str], env: dict[str, str] | None = None) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=20, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@cache
def namespaces_available() -> bool:
    """Whether this machine lets us create user, network and PID namespaces."""
    exe = shutil.which("unshare")
    return exe is not None and _runs([exe, *NAMESPACE_FLAGS, "true"])


@cache
def seccomp_available() -> bool:
    """Whether libseccomp and its ctypes binding load here and can compile a filter."""
    try:
        seccomp_filter(allow_subprocesses=False)
    except Exception:  # noqa: BLE001 - missing module, missing libseccomp.so, or no seccomp
        return False
    return True


@cache
def filesystem_available() -> bool:
    """Whether bubblewrap is installed and can build the layer's mount namespace here."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    with tempfile.TemporaryDirectory(prefix="rag-sandbox-probe-") as tmp:
        (Path(tmp) / "main.py").write_text("")
        args, python, env = filesystem_command(Path(tmp), scratch_mb=1)
        if env is None:
            return False
        return _runs([*args, python, "-I", "-S", "-c", "pass"], env={"PATH": os.defpath, **env})


@cache
def seccomp_filter(allow_subprocesses: bool) -> bytes:
    """The compiled BPF program: no signals to other processes, no IP sockets, no set-user-ID
    files, no mounts, namespaces or tracing, and (unless allowed) no new processes. It binds
    root too, which RLIMIT_NPROC does not."""
    import pyseccomp as seccomp

    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    rules.add_rule(deny, "kill")
    for family in (socket.AF_INET, socket.AF_INET6):
        rules.add_rule(seccomp.ERRNO(errno.EACCES), "socket", seccomp.Arg(0, seccomp.EQ, family))
    for name in ESCAPE_SYSCALLS:
        rules.add_rule(deny, name)
    for name, position in MODE_ARGUMENT.items():
        for bit in SETID_BITS:
            rules.add_rule(deny, name, seccomp.Arg(position, seccomp.MASKED_EQ, bit, bit))
    # These pass their arguments in memory, out of the filter's reach: ENOSYS makes libc fall
    # back to the calls above, which the rules check.
    for name in ("openat2", "fchmodat2"):
        try:
            rules.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
        except (ValueError, RuntimeError, OSError):  # a libseccomp that does not know the call
            pass
    if not allow_subprocesses:
        rules.add_rule(deny, "fork")
        rules.add_rule(deny, "vfork")
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as f:
        rules.export_bpf(f)
        f.seek(0)
        return f.read()


def namespace_command() -> list[str]:
    return ["unshare", *NAMESPACE_FLAGS]


def _python_install() -> tuple[Path, Path]:
    """The base interpreter (never a virtual environment's, whose packages stay outside) and its
    install prefix."""
    prefix = Path(sys.base_prefix).resolve()
    exe = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    return prefix, exe


def host_python() -> str:
    """The interpreter a sandbox without the filesystem layer runs: the base install's."""
    return str(_python_install()[1])


def filesystem_command(run_dir: Path, scratch_mb: int) -> tuple[list[str], str, dict[str, str] | None]:
    """bwrap's arguments for a run whose program lies in `run_dir`, the interpreter's path inside,
    and the environment variables the layer needs (None if the interpreter cannot be mapped)."""
    prefix, exe = _python_install()
    args = ["bwrap", "--die-with-parent", "--unshare-pid", "--cap-drop", "ALL"]
    for folder in SYSTEM_DIRS:
        if Path(folder).is_dir():
            args += ["--ro-bind", folder, folder]
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", str(top.readlink()), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    env: dict[str, str] = {}
    if any(prefix.is_relative_to(folder) for folder in SYSTEM_DIRS):
        python = str(exe)
    else:
        try:
            python = str(Path(SANDBOX_PYTHON) / exe.relative_to(prefix))
        except ValueError:
            return args, str(exe), None
        args += ["--ro-bind", str(prefix), SANDBOX_PYTHON]
        # A relocated install finds its libpython through this, not its absolute RUNPATH.
        env["LD_LIBRARY_PATH"] = f"{SANDBOX_PYTHON}/lib"
    size = str(scratch_mb * 1024 * 1024)
    args += [
        "--ro-bind", str(run_dir), SANDBOX_RUN,
        "--size", size, "--tmpfs", SANDBOX_WORKDIR,
        "--size", size, "--tmpfs", "/tmp",
        "--proc", "/proc", "--dev", "/dev",
        "--chdir", SANDBOX_WORKDIR,
    ]
    return args, python, env
