"""Programs that try to harm the host, to check a sandbox before trusting it with generated code.

`try_attacks(Sandbox())` runs each attack against real host targets made for the check (a victim
file outside the sandbox's folders, a canary folder in the home folder, the checkout, the model
cache, a listening local socket) and reports, per attack, whether it was contained: the program
ended as a reported failure and the host is unchanged. `rag sandbox-check` prints the table; the
tests and `benchmarks/sandbox.py` run the same list.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

import rag
from rag.models import cache_dir
from rag.verifiers.sandbox import Sandbox, Status

INTACT = "intact\n"
FILL_CHUNK_MB = 8


@dataclass(frozen=True)
class Attack:
    """One hostile program; `code` is a template over the fields of `Targets`."""

    name: str
    layer: str  # the layer that contains it where every layer is on
    code: str


ATTACKS: tuple[Attack, ...] = (
    Attack("write outside the working dir", "filesystem", "open({victim!r}, 'w').write('pwned')"),
    Attack("read /etc/shadow", "filesystem", "print(open('/etc/shadow').read()[:40])"),
    Attack("list the home folder", "filesystem", "import os\nprint(os.listdir({home!r}))"),
    Attack("delete in the home folder", "filesystem",
           "import shutil\nshutil.rmtree({home_canary!r})"),
    Attack("read the checkout", "filesystem", "print(open({checkout_file!r}).read()[:200])"),
    Attack("write the checkout", "filesystem", "open({checkout_new!r}, 'w').write('pwned')"),
    Attack("read the model cache", "filesystem", "import os\nprint(os.listdir({model_cache!r}))"),
    Attack("create a setuid file", "seccomp",
           "import os\nopen('suid', 'w').close()\nos.chmod('suid', 0o4755)"),
    Attack("follow a planted symlink to a host file", "filesystem",
           "import os\nos.symlink({victim!r}, 'link')\nprint(open('link').read())\n"
           "open('link', 'w').write('pwned')"),
    Attack("fill the private /tmp", "filesystem",
           "import os\nnames = [f'/tmp/fill-{{i}}' for i in range({fill_files})]\ntry:\n"
           "    for name in names:\n"
           "        with open(name, 'wb') as f:\n"
           "            f.write(bytes({fill_chunk} * 1024 * 1024))\nfinally:\n"
           "    for name in names:\n"
           "        if os.path.exists(name):\n            os.remove(name)"),
    Attack("fork bomb", "seccomp", "import os\nwhile True:\n    os.fork()"),
    Attack("infinite loop", "rlimits", "while True:\n    pass"),
    Attack("allocate 50 GB", "rlimits", "block = bytearray(50 * 1024 ** 3)\nprint('allocated')"),
    Attack("write a 1 GB file", "rlimits",
           "with open('big', 'wb') as f:\n    for _ in range(1024):\n"
           "        f.write(bytes(1024 ** 2))"),
    Attack("kill the parent", "seccomp",
           "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('sent')"),
    Attack("open a socket to 127.0.0.1", "seccomp, namespaces",
           "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
           "print('connected')"),
)


class AttackOutcome(BaseModel):
    """How one attack ended: contained means a reported failure and an unchanged host."""

    name: str
    layer: str
    status: Status
    contained: bool
    damage: list[str]


class Targets:
    """Host files, folders and a socket for the attacks to aim at, and a check that they are
    unchanged. Everything it creates is removed on `close()`."""

    def __init__(self, scratch_mb: int) -> None:
        cache = cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="sandbox-targets-", dir=cache))
        self.victim = self.root / "victim.txt"
        self.victim.write_text(INTACT)
        self.home = str(Path.home())
        self.home_canary = Path(tempfile.mkdtemp(prefix=".rag-sandbox-canary-", dir=self.home))
        (self.home_canary / "keep.txt").write_text(INTACT)
        package = Path(rag.__file__).parent
        self.checkout_file = str(package / "__init__.py")
        self.checkout_new = package / f"pwned-{os.getpid()}.txt"
        self.model_cache = str(cache)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.fill_chunk = FILL_CHUNK_MB
        # Twice the private /tmp, so a missing layer fills at most that much of the host's.
        self.fill_files = 2 * scratch_mb // FILL_CHUNK_MB + 1

    def fields(self) -> dict[str, object]:
        names = ("victim", "home", "home_canary", "checkout_file", "checkout_new", "model_cache",
                 "port", "fill_chunk", "fill_files")
        return {name: str(v) if isinstance(v := getattr(self, name), Path) else v for name in names}

    def damage(self) -> list[str]:
        """What an attack changed on the host; each finding is repaired for the next attack."""
        found = []
        if not self.victim.exists() or self.victim.read_text() != INTACT:
            found.append(f"{self.victim} changed")
            self.victim.write_text(INTACT)
        if not (self.home_canary / "keep.txt").exists():
            found.append(f"{self.home_canary} deleted")
            self.home_canary.mkdir(exist_ok=True)
            (self.home_canary / "keep.txt").write_text(INTACT)
        if self.checkout_new.exists():
            found.append(f"{self.checkout_new} written")
            self.checkout_new.unlink()
        try:
            # The kernel completes a TCP handshake without accept(): a connection would wait here.
            conn, _ = self.server.accept()
            conn.close()
            found.append(f"a connection reached 127.0.0.1:{self.port}")
        except BlockingIOError:
            pass
        return found

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.home_canary, ignore_errors=True)
        self.checkout_new.unlink(missing_ok=True)


@contextmanager
def attack_targets(scratch_mb: int = 64) -> Iterator[Targets]:
    targets = Targets(scratch_mb)
    try:
        yield targets
    finally:
        targets.close()


def try_attack(sandbox: Sandbox, attack: Attack, targets: Targets) -> AttackOutcome:
    result = sandbox.run(attack.code.format(**targets.fields()))
    damage = targets.damage()
    return AttackOutcome(
        name=attack.name, layer=attack.layer, status=result.status,
        contained=result.status != "ok" and not damage, damage=damage,
    )


def try_attacks(sandbox: Sandbox, attacks: Sequence[Attack] = ATTACKS) -> list[AttackOutcome]:
    """Run every attack against fresh host targets, one at a time."""
    with attack_targets(sandbox.limits.scratch_mb) as targets:
        return [try_attack(sandbox, attack, targets) for attack in attacks]
