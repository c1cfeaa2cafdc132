"""Atomic, code-free persistence: every index and cache file goes through here.

Files are written to a temporary sibling, fsynced and renamed, so a crash never leaves a half
file under the real name. Formats run no code on load (JSON, `.npy` without pickle, safetensors,
hnswlib's own format); loading a missing, truncated or foreign file raises `IndexLoadError`
naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexLoadError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False))


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def load_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise IndexLoadError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexLoadError(f"{path} is not a valid {what} (truncated or foreign?): {exc}") from None


def load_npy(path: str | Path, what: str = "array file", mmap: bool = False) -> np.ndarray:
    """Load a `.npy` without pickle; `mmap` maps it read-only instead of reading it into RAM."""
    path = Path(path)
    if not path.is_file():
        raise IndexLoadError(f"{what} not found: {path}")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexLoadError(f"{path} is not a valid {what} (truncated or foreign?): {exc}") from None


def checked_load(path: Path, what: str, loader: Callable[[Path], Any]) -> Any:
    """Run a third-party `loader` on `path`, turning its failures into an `IndexLoadError`."""
    if not path.is_file():
        raise IndexLoadError(f"{what} not found: {path}")
    try:
        return loader(path)
    except Exception as exc:  # third-party loaders raise anything on a bad file
        raise IndexLoadError(f"{path} is not a valid {what} (truncated or foreign?): {exc}") from None
