"""Helpers for tests against a live TorchServe."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from servekit.serve.client import TorchServeClient
from servekit.measure.reliability import send_together  # noqa: F401  (re-exported for tests)
from servekit.serve.torchserve import REPO_ROOT, TorchServe

ARCHIVE_SUFFIXES = ("ts", "onnx")
CI_VALUES = ("1", "true", "yes")
BATCH_SIZE = 16
MAX_BATCH_DELAY_MS = 20


def run_archive_sh(model_store: Path, *model_dirs: Path) -> subprocess.CompletedProcess:
    """Run archive.sh as a user would, with the venv's archiver on PATH."""
    env = {**os.environ, "MODEL_STORE": str(model_store),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(REPO_ROOT / "archive.sh"), *map(str, model_dirs)], env=env,
                          capture_output=True, text=True)


def under_ci() -> bool:
    """CI=true, as CI services set it."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def require(available: bool, what: str) -> None:
    """Skip a live test when ``what`` is missing on a developer's machine; fail it under CI=true,
    where a run that tested nothing live must not pass."""
    if available:
        return
    if under_ci():
        pytest.fail(f"{what} is missing and CI is set: live tests must run in CI", pytrace=False)
    pytest.skip(f"{what} is missing (set CI=true to make this a failure)")


@dataclass
class LiveServer:
    """The running server, its client and the archives registered in it."""

    server: TorchServe
    client: TorchServeClient
    archives: dict[str, str]  # archive name -> demo model name
