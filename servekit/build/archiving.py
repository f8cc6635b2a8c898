"""Run archive.sh from Python, exactly as a user would from the shell (``servekit archive`` is this)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Package data: the checkout's top-level archive.sh (linked here), a real file in an installed wheel.
ARCHIVE_SH = Path(__file__).resolve().parent / "archive.sh"


def run_archive_sh(model_dirs: list[Path], model_store: Path, quiet: bool = False, build_dir: Path | None = None) -> None:
    """Archive each model directory (none: every one under ``build_dir``) into ``model_store`` with this
    venv's torch-model-archiver; raises CalledProcessError when archive.sh refuses (it says why on stderr)."""
    env = {**os.environ, "MODEL_STORE": str(Path(model_store).resolve()),
           "ARCHIVER": str(Path(sys.executable).parent / "torch-model-archiver")}
    if build_dir is not None:
        env["BUILD_DIR"] = str(Path(build_dir).resolve())
    # bash, not the file's own mode: an installed wheel does not keep the executable bit of package data.
    subprocess.run(["bash", str(ARCHIVE_SH), *map(str, model_dirs)], check=True, env=env,
                   stdout=subprocess.DEVNULL if quiet else None)
