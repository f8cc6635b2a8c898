"""`servekit tune` against a real TorchServe: it writes its pick into the archive's model-config.yaml, and a
plain registration of the tuned archive (no batching parameters) then runs with exactly those settings."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from servekit.cli import main
from servekit.measure.bench.run import chosen_threads
from servekit.measure.tune.archive_config import read_config
from servekit.measure.bench.wrk import wrk_path
from support.serving import LiveServer, require, run_archive_sh

pytestmark = pytest.mark.integration


def test_a_tuned_archive_registers_with_the_tuned_settings(live: LiveServer, model_store: Path, any_models,
                                                           tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk (apt-get install wrk)")
    wrk_path()
    own_store = tmp_path / "store"
    assert run_archive_sh(own_store, any_models["regressor"]).returncode == 0
    archive = tmp_path / "regressor_onnx.mar"
    shutil.copy(own_store / "regressor_onnx.mar", archive)
    before = read_config(archive)
    assert "threads" not in before["handler"]  # as exported: threads measured by the worker
    status = main(["tune", str(archive), "--max-points", "2", "--duration", "1", "--concurrency", "8",
                   "--work-dir", str(tmp_path / "work"), "--reports-dir", str(tmp_path / "reports")])
    assert status == 0
    tuned = read_config(archive)
    assert tuned["handler"]["threads"] >= 1 and tuned["minWorkers"] == tuned["maxWorkers"]
    assert "| 0 |" in (tmp_path / "reports" / "tune_regressor_onnx.md").read_text()  # every point in the table
    assert (tmp_path / "reports" / "tune_regressor_onnx.png").stat().st_size > 0

    shutil.copy(archive, model_store / "tuned_regressor.mar")
    live.client.register_as_built("tuned_regressor.mar", model_name="tuned_regressor")
    try:
        (described,) = live.client.describe("tuned_regressor")
        assert (described["batchSize"], described["maxBatchDelay"], described["minWorkers"], described["maxWorkers"]) == (
            tuned["batchSize"], tuned["maxBatchDelay"], tuned["minWorkers"], tuned["maxWorkers"])
        assert len(described["workers"]) == tuned["minWorkers"]
        assert live.client.predict_json("tuned_regressor", [0.0] * 13)["predictions"][0]["value"] is not None
        assert chosen_threads(live.server.log_dir, "tuned_regressor") == tuned["handler"]["threads"]
    finally:
        live.client.unregister("tuned_regressor")
