"""A real TorchServe, started once per test session on free ports and always stopped."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from servekit.serve.torchserve import TorchServe, torchserve_available
from support.shared import build_once
from support.serving import ARCHIVE_SUFFIXES, BATCH_SIZE, MAX_BATCH_DELAY_MS, LiveServer, require, run_archive_sh


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory, worker_id: str, built_models) -> Path:
    """This worker's model store, holding the demo models' archives (archived once per run)."""
    def archive(folder: Path) -> list[Path]:
        result = run_archive_sh(folder, *(b.directory for b in built_models.values()))
        assert result.returncode == 0, result.stderr
        return sorted(folder.glob("*.mar"))

    store = tmp_path_factory.mktemp("model_store")
    for mar in build_once(tmp_path_factory, worker_id, "demo_archives", archive):
        shutil.copy2(mar, store / mar.name)  # a store of its own: each worker's tests add archives to it
    return store


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, model_store: Path, built_models) -> LiveServer:
    require(torchserve_available(), "Java 17 or the torchserve launcher (TorchServe needs both)")
    server = TorchServe(model_store, tmp_path_factory.mktemp("torchserve"))
    client = server.start()
    try:
        archives = {}
        for name in built_models:
            for suffix in ARCHIVE_SUFFIXES:
                archive = f"{name}_{suffix}"
                client.register(f"{archive}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=MAX_BATCH_DELAY_MS)
                archives[archive] = name
        yield LiveServer(server, client, archives)
    finally:
        server.stop()
