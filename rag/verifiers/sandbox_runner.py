"""The first code to run inside a sandbox process: lock a child down, run the program in it.

This file runs as a script (`python -I sandbox_runner.py SETTINGS_JSON`), never imported by `rag`:
it uses only the standard library, so it starts fast, trusts nothing else, and runs the same
inside the filesystem layer, where no site-packages are visible. Limits set in the child are
inherited by anything the untrusted code manages to start.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_INSTRUCTION_BYTES = 8


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


def load_seccomp(program: bytes) -> None:
    """Install a compiled BPF filter; no_new_privs first, so no set-user-ID binary regains
    privileges (and the kernel lets an unprivileged process load a filter)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                           ctypes.c_ulong]
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HxxxxxxP", len(program) // BPF_INSTRUCTION_BYTES,
                        ctypes.addressof(buffer))
    fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
    for option, arg in ((PR_SET_NO_NEW_PRIVS, 1), (PR_SET_SECCOMP, SECCOMP_MODE_FILTER)):
        pointer = ctypes.addressof(fprog_buffer) if option == PR_SET_SECCOMP else None
        if libc.prctl(option, arg, pointer, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def main() -> None:
    """Fork: the child locks itself down and becomes `python PROGRAM`; this process waits and
    reports how the child ended on the status pipe, which a signal would otherwise hide."""
    settings = json.loads(sys.argv[1])
    status_fd = settings["status_fd"]
    pid = os.fork()
    if pid == 0:
        os.close(status_fd)
        set_rlimits(settings)
        if settings["seccomp_bpf"]:
            load_seccomp(bytes.fromhex(settings["seccomp_bpf"]))
        os.execv(sys.executable, [sys.executable, "-I", "-B", settings["program"]])
    _, status = os.waitpid(pid, 0)
    with os.fdopen(status_fd, "w") as f:
        json.dump({"returncode": os.waitstatus_to_exitcode(status)}, f)


if __name__ == "__main__":
    main()
