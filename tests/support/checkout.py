"""A copy of this checkout for a test to run commands in, as a user would in theirs."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from servekit.serve.torchserve import REPO_ROOT


def source_files() -> list[str]:
    """The files git would commit: tracked and new, not ignored (deleted ones left out)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [name for name in listed if name and ((REPO_ROOT / name).exists() or (REPO_ROOT / name).is_symlink())]


def copy_checkout(target: Path, with_venv: bool = False) -> Path:
    """The source files under ``target`` (links kept as links, times kept so make sees nothing new);
    with ``with_venv``, ``.venv`` links to this checkout's environment."""
    for name in source_files():
        copy = target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, copy, follow_symlinks=False)
    if with_venv:
        (target / ".venv").symlink_to(REPO_ROOT / ".venv")
        # A checkout after `make setup`: the stamp is newer than what it was made from, so a make target
        # in the copy never reinstalls (which would point the shared environment's servekit at the copy).
        stamp = (REPO_ROOT / ".venv" / ".installed").stat().st_mtime
        for name in ("pyproject.toml", "Makefile"):
            os.utime(target / name, (stamp - 1, stamp - 1))
    return target
