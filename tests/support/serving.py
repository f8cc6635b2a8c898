"""Helpers for tests against a live TorchServe."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from servekit.client import TorchServeClient
from servekit.reliability import send_together  # noqa: F401  (re-exported for tests)
from servekit.torchserve import REPO_ROOT, TorchServe

ARCHIVE_SUFFIXES = ("ts", "onnx")
BATCH_SIZE = 16
MAX_BATCH_DELAY_MS = 20


def run_archive_sh(model_store: Path, *model_dirs: Path) -> subprocess.CompletedProcess:
    """Run archive.sh as a user would, with the venv's archiver on PATH."""
    env = {**os.environ, "MODEL_STORE": str(model_store),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(REPO_ROOT / "archive.sh"), *map(str, model_dirs)], env=env,
                          capture_output=True, text=True)


@dataclass
class LiveServer:
    """The running server, its client and the archives registered in it."""

    server: TorchServe
    client: TorchServeClient
    archives: dict[str, str]  # archive name -> demo model name
