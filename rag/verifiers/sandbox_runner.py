"""The first code to run inside a sandbox process: lock a child down, run `main.py` in it.

This file runs as a script (`python -I sandbox_runner.py LIMITS_JSON`), never imported by `rag`:
it uses only the standard library and pyseccomp, so it starts fast and trusts nothing else.
Limits set in the child are inherited by anything the untrusted code manages to start.
"""

from __future__ import annotations

import errno
import json
import resource
import os
import socket
import sys

# clone() flag that marks a new thread rather than a new process.
CLONE_THREAD = 0x00010000


def set_rlimits(limits: dict[str, int]) -> None:
    mib = 1024 * 1024
    cpu = limits["cpu_seconds"]
    pairs = {
        # A soft CPU limit below the hard one ends the run with SIGXCPU, which names the cause.
        resource.RLIMIT_CPU: (cpu, cpu + 1),
        resource.RLIMIT_AS: (limits["memory_mb"] * mib,) * 2,
        resource.RLIMIT_FSIZE: (limits["file_size_mb"] * mib,) * 2,
        resource.RLIMIT_NOFILE: (limits["open_files"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    if limits["allow_subprocesses"]:
        # Counts every process of the user, and root is exempt: seccomp is the default guard.
        pairs[resource.RLIMIT_NPROC] = (limits["processes"],) * 2
    for kind, pair in pairs.items():
        resource.setrlimit(kind, pair)


def load_seccomp(allow_subprocesses: bool) -> None:
    """Syscall filter: no signals to other processes, no IP sockets, and (unless allowed) no
    new processes. It binds root too, which RLIMIT_NPROC does not."""
    import pyseccomp as seccomp

    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    rules.add_rule(deny, "kill")
    for family in (socket.AF_INET, socket.AF_INET6):
        rules.add_rule(seccomp.ERRNO(errno.EACCES), "socket", seccomp.Arg(0, seccomp.EQ, family))
    if not allow_subprocesses:
        rules.add_rule(deny, "fork")
        rules.add_rule(deny, "vfork")
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
        # clone3 passes its flags in memory, out of the filter's reach: ENOSYS makes libc fall
        # back to clone(), which the rule above checks.
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    rules.load()


def main() -> None:
    """Fork: the child locks itself down and becomes `python main.py`; this process waits and
    records how the child ended, which a signal would otherwise hide behind `unshare`."""
    settings = json.loads(sys.argv[1])
    pid = os.fork()
    if pid == 0:
        set_rlimits(settings)
        if settings["seccomp"]:
            load_seccomp(settings["allow_subprocesses"])
        os.execv(sys.executable, [sys.executable, "-I", "-B", "main.py"])
    _, status = os.waitpid(pid, 0)
    with open(".status", "w") as f:
        json.dump({"returncode": os.waitstatus_to_exitcode(status)}, f)


if __name__ == "__main__":
    main()
