"""Run archive.sh from Python, exactly as a user would from the shell."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from servekit.serve.torchserve import REPO_ROOT


def run_archive_sh(model_dirs: list[Path], model_store: Path, quiet: bool = False) -> None:
    """Archive each model directory into ``model_store`` with this venv's torch-model-archiver."""
    env = {**os.environ, "MODEL_STORE": str(Path(model_store).resolve()),
           "ARCHIVER": str(Path(sys.executable).parent / "torch-model-archiver")}
    subprocess.run([str(REPO_ROOT / "archive.sh"), *map(str, model_dirs)], check=True, env=env,
                   stdout=subprocess.DEVNULL if quiet else None)
