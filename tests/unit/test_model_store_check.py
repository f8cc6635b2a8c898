"""The launcher refuses a model store with links that lead outside it (TorchServe would follow them)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from servekit.serve.torchserve import TorchServe, UnsafeModelStore, check_model_store


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "model_store"
    store.mkdir()
    (store / "mine.mar").write_bytes(b"PK")
    return store


def test_a_store_of_plain_files_and_inner_links_is_accepted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    os.symlink(store / "mine.mar", store / "alias.mar")
    check_model_store(store)


@pytest.mark.parametrize("target", ["elsewhere/evil.mar", "elsewhere"])
def test_a_link_out_of_the_store_stops_the_launcher_before_torchserve_starts(tmp_path: Path, target: str) -> None:
    store = _store(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "evil.mar").write_bytes(b"PK")
    os.symlink(tmp_path / target, store / "linked.mar")
    server = TorchServe(store, tmp_path / "run")
    with pytest.raises(UnsafeModelStore, match="linked.mar points outside the model store"):
        server.start()
    assert server.process is None and not (tmp_path / "run").exists()
