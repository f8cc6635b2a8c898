"""Build an expensive test input once per test run, even when pytest-xdist runs several workers.

A session fixture runs once per worker; the demo models, their variants or the tiny BERT built twice
would cost the run what the second worker saves. The first worker to ask builds into a folder of the
run's temporary root (shared by the workers) under a lock; the others wait for it and load the result.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable, TypeVar

import pytest
from filelock import FileLock

T = TypeVar("T")
RESULT = "result.pickle"


def run_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The folder every worker of this run shares (the session's own temp root without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def build_once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str,
               build: Callable[[Path], T]) -> T:
    """``build(folder)`` run by one worker of this test run; every worker gets its (pickled) result."""
    root = run_root(tmp_path_factory, worker_id)
    folder = root / f"shared-{name}"
    with FileLock(str(root / f"shared-{name}.lock")):
        if (folder / RESULT).exists():
            return pickle.loads((folder / RESULT).read_bytes())
        folder.mkdir(exist_ok=True)
        result = build(folder)
        (folder / RESULT).write_bytes(pickle.dumps(result))
        return result
