"""The sandbox contains what generated code may do; each test names the layer it relies on."""

from __future__ import annotations

import os
import socket

import pytest

from rag.errors import BackendUnavailableError
from rag.verifiers.sandbox import Sandbox, namespaces_available, seccomp_available

needs_layers = pytest.mark.skipif(
    not (seccomp_available() and namespaces_available()),
    reason="this machine lacks seccomp or user namespaces",
)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(timeout_s=8, cpu_seconds=2)


def test_ordinary_program_runs_and_output_is_captured(sandbox: Sandbox) -> None:
    result = sandbox.run("import sys\nprint('hello')\nprint('oops', file=sys.stderr)")
    assert result.passed and result.stdout == "hello\n" and result.stderr == "oops\n"


def test_exceptions_and_exit_codes_are_reported(sandbox: Sandbox) -> None:
    failed, exited = sandbox.run_many(["raise KeyError('k')", "import sys; sys.exit(3)"])
    assert failed.status == "error" and failed.exception == "KeyError"
    assert exited.status == "error" and exited.returncode == 3


def test_runs_start_in_a_fresh_directory_with_a_clean_environment(sandbox: Sandbox) -> None:
    os.environ["RAG_SANDBOX_SECRET"] = "leak"
    try:
        code = "import os; print(sorted(os.listdir('.')), 'RAG_SANDBOX_SECRET' in os.environ)"
        first, second = sandbox.run_many(["open('left.txt', 'w').write('x')", code])
    finally:
        del os.environ["RAG_SANDBOX_SECRET"]
    assert first.passed
    assert "left.txt" not in second.stdout and second.stdout.strip().endswith("False")


def test_infinite_loop_hits_the_cpu_limit(sandbox: Sandbox) -> None:
    result = sandbox.run("while True:\n    pass")
    assert result.status == "timeout" and result.signal == "SIGXCPU"


def test_sleeping_program_hits_the_wall_clock() -> None:
    result = Sandbox(timeout_s=1).run("import time\ntime.sleep(60)")
    assert result.status == "timeout" and result.returncode is None


@needs_layers
def test_fork_bomb_cannot_fork(sandbox: Sandbox) -> None:
    result = sandbox.run("import os\nwhile True:\n    os.fork()")
    assert result.status == "error" and result.exception in {"PermissionError", "BlockingIOError"}


def test_allocating_50_gb_fails(sandbox: Sandbox) -> None:
    result = sandbox.run("block = bytearray(50 * 1024 ** 3)\nprint('allocated')")
    assert result.status == "error" and result.exception == "MemoryError"


def test_writing_1_gb_file_fails(sandbox: Sandbox) -> None:
    code = "with open('big', 'wb') as f:\n    for _ in range(1024):\n        f.write(bytes(1024 ** 2))"
    result = sandbox.run(code)
    assert result.status == "error" and "File too large" in result.stderr


@needs_layers
def test_killing_the_parent_is_refused(sandbox: Sandbox) -> None:
    result = sandbox.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('sent')")
    assert result.status == "error" and result.exception == "PermissionError"
    assert "sent" not in result.stdout


@pytest.mark.parametrize(
    "layers", [{"seccomp": True, "namespaces": False}, {"seccomp": False, "namespaces": True}],
    ids=["seccomp", "namespaces"],
)
def test_each_network_layer_alone_blocks_a_local_socket(layers: dict[str, bool]) -> None:
    if (layers["seccomp"] and not seccomp_available()) or (
        layers["namespaces"] and not namespaces_available()
    ):
        pytest.skip("layer unavailable here")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\nprint('in')"
    result = Sandbox(timeout_s=8, **layers).run(code)
    # The kernel completes a TCP handshake without accept(): a connection would be waiting here.
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.accept()
    server.close()
    assert result.status == "error" and result.exception in {"PermissionError", "OSError"}


def test_many_runs_keep_their_order() -> None:
    results = Sandbox(timeout_s=8).run_many([f"print({i} * {i})" for i in range(20)], workers=4)
    assert [r.stdout.strip() for r in results] == [str(i * i) for i in range(20)]


def test_strict_isolation_refuses_a_missing_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rag.verifiers.sandbox.namespaces_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="namespaces"):
        Sandbox()
    assert Sandbox(isolation="best_effort").protections == ["rlimits", "timeout", "seccomp"]
