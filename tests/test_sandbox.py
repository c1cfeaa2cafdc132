"""The sandbox contains what generated code may do; each test names the layer it relies on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rag.errors import BackendUnavailableError
from rag.eval.datasets import humaneval
from rag.verifiers import run_unit_tests
from rag.verifiers.attacks import ATTACKS, Attack, Targets, attack_targets, try_attack
from rag.verifiers.sandbox import OPTIONAL_LAYERS, Sandbox
from rag.verifiers.sandbox_layers import (
    filesystem_available,
    namespaces_available,
    seccomp_available,
)

ALL_LAYERS = seccomp_available() and namespaces_available() and filesystem_available()
needs_layers = pytest.mark.skipif(
    not ALL_LAYERS, reason="this machine lacks seccomp, user namespaces or bubblewrap"
)
GREEDY = Path(__file__).parents[1] / "benchmarks/results/end_to_end/humaneval/zero-shot/predictions.jsonl"


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(timeout_s=8, cpu_seconds=2)


@pytest.fixture(scope="module")
def targets() -> Targets:
    with attack_targets() as made:
        yield made


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


def test_sleeping_program_hits_the_wall_clock() -> None:
    result = Sandbox(timeout_s=1).run("import time\ntime.sleep(60)")
    assert result.status == "timeout" and result.returncode is None


@needs_layers
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(sandbox: Sandbox, targets: Targets, attack: Attack) -> None:
    outcome = try_attack(sandbox, attack, targets)
    assert outcome.status != "ok" and outcome.damage == []
    assert outcome.contained


def test_the_ways_each_attack_ends(sandbox: Sandbox, targets: Targets) -> None:
    """Contained for the right reason: the layer an attack names is what stopped it."""
    if not ALL_LAYERS:
        pytest.skip("needs every layer")
    fields = targets.fields()
    by_name = {a.name: sandbox.run(a.code.format(**fields)) for a in ATTACKS}
    assert by_name["infinite loop"].signal == "SIGXCPU"
    assert by_name["allocate 50 GB"].exception == "MemoryError"
    assert "File too large" in by_name["write a 1 GB file"].stderr
    assert by_name["fork bomb"].exception in {"PermissionError", "BlockingIOError"}
    assert by_name["kill the parent"].exception == "PermissionError"
    assert "sent" not in by_name["kill the parent"].stdout
    assert by_name["create a setuid file"].exception == "PermissionError"
    assert "No space left on device" in by_name["fill the private /tmp"].stderr
    for name in ("read /etc/shadow", "list the home folder", "read the checkout",
                 "read the model cache"):
        assert by_name[name].exception == "FileNotFoundError", name


@pytest.mark.skipif(not filesystem_available(), reason="bubblewrap is not installed")
def test_the_filesystem_layer_alone_hides_the_host() -> None:
    """With seccomp and namespaces off, the filesystem layer still stops file attacks."""
    alone = Sandbox(timeout_s=8, seccomp=False, namespaces=False)
    assert alone.protections == ["rlimits", "timeout", "filesystem"]
    names = {"write outside the working dir", "read /etc/shadow", "delete in the home folder",
             "write the checkout", "follow a planted symlink to a host file",
             "fill the private /tmp"}
    with attack_targets(alone.limits.scratch_mb) as made:
        outcomes = [try_attack(alone, a, made) for a in ATTACKS if a.name in names]
    assert [o.name for o in outcomes if not o.contained] == []


@pytest.mark.skipif(not seccomp_available(), reason="libseccomp is not available")
def test_seccomp_alone_refuses_setuid_files_and_mounts(tmp_path: Path) -> None:
    alone = Sandbox(timeout_s=8, namespaces=False, filesystem=False)
    setuid, mode, mount = alone.run_many([
        "import os\nopen('s', 'w').close()\nos.chmod('s', 0o4755)",
        "import os\nos.close(os.open('t', os.O_CREAT | os.O_WRONLY, 0o2755))",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.unshare(0x00020000) == 0, ctypes.get_errno()",
    ])
    assert setuid.exception == "PermissionError" and mode.exception == "PermissionError"
    assert mount.exception == "AssertionError"


@pytest.mark.parametrize(
    "layers", [{"seccomp": True, "namespaces": False}, {"seccomp": False, "namespaces": True}],
    ids=["seccomp", "namespaces"],
)
def test_each_network_layer_alone_blocks_a_local_socket(layers: dict[str, bool]) -> None:
    if (layers["seccomp"] and not seccomp_available()) or (
        layers["namespaces"] and not namespaces_available()
    ):
        pytest.skip("layer unavailable here")
    attack = next(a for a in ATTACKS if a.name == "open a socket to 127.0.0.1")
    with attack_targets() as made:
        outcome = try_attack(Sandbox(timeout_s=8, filesystem=False, **layers), attack, made)
    assert outcome.contained, outcome.damage


def test_many_runs_keep_their_order() -> None:
    results = Sandbox(timeout_s=8).run_many([f"print({i} * {i})" for i in range(20)], workers=4)
    assert [r.stdout.strip() for r in results] == [str(i * i) for i in range(20)]


def test_strict_isolation_refuses_a_missing_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(OPTIONAL_LAYERS, "filesystem", lambda: False)
    with pytest.raises(BackendUnavailableError, match="apt-get install bubblewrap"):
        Sandbox()
    assert "filesystem" not in Sandbox(isolation="best_effort").protections


@needs_layers
def test_humaneval_verdicts_are_unchanged_under_every_layer(sandbox: Sandbox) -> None:
    """Canonical solutions still pass, and recorded greedy programs keep their verdicts."""
    tasks = {t.id: t for t in humaneval(limit=24)}
    records = [json.loads(line) for line in GREEDY.read_text().splitlines()]
    records = [r for r in records if r["id"] in tasks]
    assert len(records) == len(tasks)
    for record in records:
        task = tasks[record["id"]]
        programs = [task.prompt + task.canonical_solution, *record["programs"]]
        results = run_unit_tests(sandbox, programs, task.test, task.entry_point)
        assert results[0].passed, (task.id, results[0].stderr)
        assert [r.passed for r in results[1:]] == record["passed"], task.id
