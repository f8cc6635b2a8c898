"""The image's start command (deploy/serve.sh with deploy/config.properties), run on this machine the
way the container runs it: archives loaded at start, no tokens, registration refused, KServe v2
through the official Triton client, metrics scraped, nothing written outside TMPDIR, clean stop."""
from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from servekit.serve.torchserve import REPO_ROOT, TorchServe, torchserve_available
from support.models import eager_predictions
from support.serving import require

pytestmark = pytest.mark.integration

SERVED = ("digits_mlp_onnx", "digits_cnn_ts")  # one per backend


class ContainerServe(TorchServe):
    """TorchServe started by deploy/serve.sh from an image-like home directory."""

    def __init__(self, home: Path) -> None:
        super().__init__(home / "model_store", home / "run", config_template=REPO_ROOT / "deploy" / "config.properties",
                         env={"MODEL_STORE": str(home / "model_store"), "SERVE_CONFIG": str(home / "run" / "config.properties"),
                              "HOME": str(home / "user"),  # read-only in the pod, like the rest of the image
                              # In the image, pip put torchserve on PATH; here it is in this venv.
                              "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})

    def command(self) -> list[str]:
        return ["bash", str(REPO_ROOT / "deploy" / "serve.sh")]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def start_container(home: Path, model_store: Path) -> tuple[ContainerServe, object, dict]:
    """An image-like home holding SERVED, started by the image's command; the store's files before start."""
    require(torchserve_available(), "Java 17 or the torchserve launcher (TorchServe needs both)")
    (home / "model_store").mkdir()
    (home / "user").mkdir()
    for name in SERVED:
        shutil.copy(model_store / f"{name}.mar", home / "model_store")
    server = ContainerServe(home)
    image_files = _tree(home / "model_store")
    return server, server.start(), image_files


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory, model_store: Path):
    server, client, image_files = start_container(tmp_path_factory.mktemp("image"), model_store)
    try:
        yield server, client, image_files
    finally:
        server.stop()


def test_archives_load_at_start_and_answer_without_tokens(container, built_models) -> None:
    server, client, _ = container
    assert client.tokens is None and not list(server.workdir.rglob("key_file.json"))
    assert sorted(client.list_models()) == sorted(SERVED)
    built = built_models["digits_mlp"]
    answer = client.predict_json("digits_mlp_onnx", built.x_test[:3].tolist())
    assert [p["class"] for p in answer["predictions"]] == eager_predictions(built.model, built.x_test[:3]).tolist()


def test_registration_is_refused_inside_the_pod(container) -> None:
    _, client, _ = container
    response = requests.post(f"{client.management_url}/models", params={"url": "digits_mlp_onnx.mar"}, timeout=10)
    assert response.status_code == 405


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("archive, model", [("digits_mlp_onnx", "digits_mlp"), ("digits_cnn_ts", "digits_cnn")])
def test_the_triton_client_speaks_v2_to_the_pod(container, built_models, archive: str, model: str, binary: bool) -> None:
    """Triton's HTTP client as a KServe user calls it: binary tensors are its default."""
    import tritonclient.http as triton

    _, client, _ = container
    built = built_models[model]
    x = np.ascontiguousarray(built.x_test[:5], dtype=np.float32)
    triton_client = triton.InferenceServerClient(client.inference_url.removeprefix("http://"))
    request = triton.InferInput(built.contract.name, list(x.shape), "FP32")
    request.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("class", "probabilities")]
    result = triton_client.infer(archive, [request], outputs=outputs, request_id="pod-1")
    assert result.get_response()["id"] == "pod-1"
    assert result.as_numpy("class").tolist() == eager_predictions(built.model, x).tolist()
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(triton.InferenceServerException, match="this model's input is") as rejected:
        triton_client.infer(archive, [triton.InferInput("nope", list(x.shape), "FP32").set_data_from_numpy(x)])
    assert rejected.value.status() == "400"


def test_prometheus_scrapes_handler_metrics_from_the_pod(container, built_models) -> None:
    _, client, _ = container
    built = built_models["digits_mlp"]
    client.predict_json("digits_mlp_onnx", built.x_test[:2].tolist())  # this test's own traffic
    handler_metric = re.compile(r'^HandlerInferMs{.*ModelName="digits_mlp_onnx"', re.M)
    deadline, text = time.monotonic() + 15, ""
    while time.monotonic() < deadline and not handler_metric.search(text):  # the frontend relays them from the log
        text = requests.get(f"{client.metrics_url}/metrics", timeout=10).text
        time.sleep(0.2)
    assert handler_metric.search(text) and 'ts_inference_requests_total{' in text


def test_nothing_is_written_outside_tmpdir_and_sigterm_stops_it(tmp_path: Path, model_store: Path, built_models) -> None:
    """Its own server: stopping the module's shared one would break whichever test ran after it."""
    server, client, image_files = start_container(tmp_path, model_store)
    try:
        built = built_models["digits_cnn"]
        assert client.predict_npy("digits_cnn_ts", built.x_test[0])["predictions"]
        assert _tree(server.model_store) == image_files
        assert not list((server.model_store.parent / "user").iterdir()), "something wrote into HOME"
        written = {p.relative_to(server.workdir).parts[0] for p in server.workdir.rglob("*")}
        assert written <= {"config.properties", "torchserve.out", "tmp"}, written  # config and output are the test's own
        assert list((server.workdir / "tmp" / "logs").glob("ts_log.log"))
    finally:
        server.stop()
    assert server.process.returncode != -signal.SIGKILL, "TorchServe ignored SIGTERM and had to be killed"
