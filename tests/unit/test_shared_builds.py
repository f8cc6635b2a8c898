"""An expensive test input is built once per run and every pytest-xdist worker gets the same result."""
from __future__ import annotations

from pathlib import Path

import pytest

from support.shared import build_once, run_root


def test_built_once_then_loaded(tmp_path_factory: pytest.TempPathFactory) -> None:
    calls: list[Path] = []

    def build(folder: Path) -> dict:
        calls.append(folder)
        (folder / "artifact.txt").write_text("built")
        return {"folder": folder, "n": len(calls)}

    first = build_once(tmp_path_factory, "master", "counted", build)
    second = build_once(tmp_path_factory, "master", "counted", build)
    assert len(calls) == 1 and first == second == {"folder": calls[0], "n": 1}
    assert (calls[0] / "artifact.txt").read_text() == "built"


def test_a_failed_build_is_tried_again(tmp_path_factory: pytest.TempPathFactory) -> None:
    def broken(folder: Path) -> int:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        build_once(tmp_path_factory, "master", "retried", broken)
    assert build_once(tmp_path_factory, "master", "retried", lambda folder: 7) == 7


def test_workers_share_the_runs_root_and_a_single_process_keeps_its_own(tmp_path_factory) -> None:
    base = tmp_path_factory.getbasetemp()
    assert run_root(tmp_path_factory, "master") == base
    assert run_root(tmp_path_factory, "gw1") == base.parent
