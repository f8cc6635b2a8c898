"""Bad input, faults and exposure against the live TorchServe: keep serving, lose nothing."""
from __future__ import annotations

import psutil
import pytest

from servekit.measure.bad_inputs import bad_inputs
from servekit.measure.reliability import churn_under_load, kill_worker_under_load, run_matrix, scale_under_load
from support.serving import BATCH_SIZE, LiveServer

pytestmark = pytest.mark.integration
MAX_REQUEST_SIZE = 6291456  # config.properties


@pytest.mark.parametrize("archive", ["digits_mlp_ts", "digits_mlp_onnx", "digits_cnn_ts", "digits_cnn_onnx"])
def test_bad_input_matrix_in_shared_batches(live: LiveServer, built_models, archive: str) -> None:
    built = built_models[live.archives[archive]]
    cases = bad_inputs(built.contract.shape, 64, MAX_REQUEST_SIZE, built.contract.name)
    assert len(cases) >= 20
    outcomes, good_failures = run_matrix(live.client, archive, built.contract.shape, cases, BATCH_SIZE)
    failed = [(o.case, o.expected_status, o.status, o.message[:120]) for o in outcomes if not o.passed]
    assert not failed, failed
    assert good_failures == 0
    assert live.client.ping()


def test_killed_worker_is_restarted_and_retries_lose_nothing(live: LiveServer, built_models) -> None:
    live.client.register("digits_mlp_onnx.mar", model_name="victim", batch_size=8, max_batch_delay_ms=2)
    try:
        run = kill_worker_under_load(live.client, "victim", built_models["digits_mlp"].contract.shape)
        assert run.lost == 0, run
        assert run.recovery_s is not None and run.recovery_s < 60
        assert run.details[0].startswith("killed worker pid")
    finally:
        live.client.unregister("victim")


def test_scaling_and_model_churn_under_load_drop_nothing(live: LiveServer, built_models) -> None:
    live.client.register("digits_mlp_ts.mar", model_name="scaled", batch_size=8, max_batch_delay_ms=2)
    shape = built_models["digits_mlp"].contract.shape
    try:
        for run in (scale_under_load(live.client, "scaled", shape),
                    churn_under_load(live.client, "scaled", "digits_cnn_onnx.mar", shape)):
            assert run.requests == 300 and run.lost == 0, run
        assert "churn" not in live.client.list_models()
    finally:
        live.client.unregister("scaled")


def listening_sockets(root_pid: int) -> list:
    """Listening inet sockets of a process tree; workers that come and go meanwhile are skipped."""
    root = psutil.Process(root_pid)
    sockets = []
    for process in [root, *root.children(recursive=True)]:
        try:
            sockets += [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    return sockets


def test_every_listener_is_on_loopback(live: LiveServer) -> None:
    listening = listening_sockets(live.server.process.pid)
    assert len(listening) >= 5  # inference, management, metrics, two gRPC
    assert all(c.laddr.ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for c in listening), listening


def test_restart_from_snapshot_restores_models_and_batching(tmp_path, model_store) -> None:
    import time

    from servekit.serve.torchserve import TorchServe, restart_from_snapshot

    server = TorchServe(model_store, tmp_path / "ts")
    client = server.start()
    try:
        client.register("digits_mlp_onnx.mar", model_name="survivor", batch_size=8, max_batch_delay_ms=7)
        restored = restart_from_snapshot(server)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                models = restored.client.list_models()
                if "survivor" in models and restored.client.describe("survivor")[0]["workers"][0]["status"] == "READY":
                    break
                time.sleep(0.5)
            [description] = restored.client.describe("survivor")
            assert description["batchSize"] == 8 and description["maxBatchDelay"] == 7
            assert restored.client.predict_json("survivor", [0.5] * 64)["predictions"][0]["label"]
        finally:
            restored.stop()
    finally:
        server.stop()
