"""Real archives in a real TorchServe: registration with batching, concurrent inference, batch isolation."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests

from servekit.serve.torchserve import PRIVATE_SOCKETS_PREFIX
from servekit.serve.client import NPY_CONTENT_TYPE, TorchServeError, UnsafeRegistration, npy_bytes
from support.models import eager_predictions

from support.serving import (BATCH_SIZE, MAX_BATCH_DELAY_MS, LiveServer, batch_counters, mean_batch_size,
                             send_together)

pytestmark = pytest.mark.integration
CONCURRENT_REQUESTS = 48


def json_body(instance: np.ndarray) -> tuple[bytes, str]:
    return json.dumps({"data": instance.tolist()}).encode(), "application/json"


def test_every_archive_is_registered_with_batching(live: LiveServer) -> None:
    assert set(live.archives) <= set(live.client.list_models())
    for archive in live.archives:
        [description] = live.client.describe(archive)
        assert description["batchSize"] == BATCH_SIZE
        assert description["maxBatchDelay"] == MAX_BATCH_DELAY_MS
        assert description["workers"][0]["status"] == "READY"


@pytest.mark.parametrize("archive", ["digits_mlp_ts", "digits_mlp_onnx", "digits_cnn_ts", "digits_cnn_onnx"])
def test_concurrent_requests_match_in_process_and_form_batches(live: LiveServer, built_models, archive: str) -> None:
    built = built_models[live.archives[archive]]
    x = built.x_test[:CONCURRENT_REQUESTS]
    # Half JSON, half npy: both decoders in the same batches.
    bodies = [json_body(xi) if i % 2 else (npy_bytes(xi), NPY_CONTENT_TYPE) for i, xi in enumerate(x)]
    before = batch_counters(live.client, archive)
    responses = send_together(live.client, archive, bodies)
    assert [r.status_code for r in responses] == [200] * len(bodies)
    served = [r.json()["predictions"][0]["class"] for r in responses]
    assert served == eager_predictions(built.model, x).tolist()
    mean = mean_batch_size(live.client, archive, before, len(bodies))
    assert 1 < mean <= BATCH_SIZE, f"no batch formed: {mean:.2f} instances per batch"
    assert not any("X-Batch" in name for r in responses for name in r.headers)  # nothing about batch-mates


def test_one_bad_request_in_a_shared_batch_gets_the_only_4xx(live: LiveServer, built_models) -> None:
    built = built_models["digits_mlp"]
    bodies = [json_body(x) for x in built.x_test[:7]] + [(b'{"data": [1, 2', "application/json")]
    before = batch_counters(live.client, "digits_mlp_onnx")
    responses = send_together(live.client, "digits_mlp_onnx", bodies)
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 7 + [400]
    assert "not valid JSON" in responses[-1].json()["error"]["message"]
    served = [r.json()["predictions"][0]["class"] for r in responses[:7]]
    assert served == eager_predictions(built.model, built.x_test[:7]).tolist()
    assert mean_batch_size(live.client, "digits_mlp_onnx", before, 7) > 1


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"{}", "application/json", 400, "exactly one key"),
    (json.dumps({"data": [0.5] * 63}).encode(), "application/json", 422, "shape [63]; expected [64]"),
    (json.dumps({"data": [[float("nan")] * 64]}).encode(), "application/json", 422, "NaN/Inf"),
    (npy_bytes(np.zeros((65, 64), np.float32)), NPY_CONTENT_TYPE, 413, "at most 64 per request"),
    (b"GIF89a", "image/gif", 415, "image/gif"),
])
def test_bad_input_status_and_message_through_the_server(live: LiveServer, body: bytes, content_type: str,
                                                         status: int, message: str) -> None:
    response = live.client.predict_raw("digits_mlp_ts", body, content_type)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]
    assert live.client.ping()


def test_multi_instance_request_answers_each_instance(live: LiveServer, built_models) -> None:
    built = built_models["digits_cnn"]
    answer = live.client.predict_npy("digits_cnn_onnx", built.x_test[:10])
    assert [p["class"] for p in answer["predictions"]] == eager_predictions(built.model, built.x_test[:10]).tolist()


def test_served_accuracy_equals_in_process_accuracy(live: LiveServer, built_models) -> None:
    built = built_models["digits_mlp"]
    answer = live.client.predict_npy("digits_mlp_ts", built.x_test[:64])
    served = np.array([p["class"] for p in answer["predictions"]])
    assert (served == built.y_test[:64]).mean() == (eager_predictions(built.model, built.x_test[:64]) == built.y_test[:64]).mean()


def test_requests_without_a_valid_token_are_refused(live: LiveServer) -> None:
    url = f"{live.client.inference_url}/predictions/digits_mlp_ts"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = requests.post(url, json={"data": [0.5] * 64}, headers=headers, timeout=10)
        # TorchServe 0.12 answers auth failures with 400 InvalidKeyException (not 401).
        assert response.status_code == 400 and "Token Authorization failed" in response.text
    management = requests.get(f"{live.client.management_url}/models", timeout=10)
    assert management.status_code == 400 and "Token Authorization failed" in management.text


@pytest.mark.parametrize("url", ["file:///etc/passwd.mar", "https://example.invalid/model.mar"])
def test_archives_outside_the_model_store_are_refused(live: LiveServer, url: str) -> None:
    with pytest.raises(UnsafeRegistration, match="URLs"):  # our client never sends it
        live.client.register(url, batch_size=1, max_batch_delay_ms=1)
    with pytest.raises(TorchServeError, match="does not match any allowed URL") as err:  # nor would TorchServe take it
        live.client.post_model({"url": url, "batch_size": 1, "max_batch_delay": 1, "synchronous": "true"})
    assert err.value.status == 404


@pytest.fixture
def foreign_store(tmp_path: Path, live: LiveServer) -> Path:
    """Another folder named model_store, holding real archives that are not in ours."""
    foreign = tmp_path / "somewhere" / "model_store"
    foreign.mkdir(parents=True)
    shutil.copy(live.server.model_store / "digits_mlp_onnx.mar", foreign / "evil.mar")
    shutil.copy(live.server.model_store / "digits_mlp_onnx.mar", foreign / "digits_mlp_onnx.mar")
    return foreign


# Each way of naming an archive outside the store, and what TorchServe 0.12 answers with our allowed_urls.
OUTSIDE_FORMS = {
    "file URL to another model_store": ("file://{foreign}/evil.mar", 404, "does not match any allowed URL"),
    "FILE URL, other case": ("FILE://{foreign}/evil.mar", 404, "does not match any allowed URL"),
    "file URL with a host": ("file://localhost{foreign}/evil.mar", 404, "does not match any allowed URL"),
    "file URL of our own store": ("file://{store}/digits_mlp_onnx.mar", 404, "does not match any allowed URL"),
    "absolute path": ("{foreign}/evil.mar", 400, "Failed to download archive"),
    "absolute path, a name our store holds": ("{foreign}/digits_mlp_onnx.mar", 500, "already exists"),
    "traversal": ("../{foreign_from_store}/evil.mar", 404, "Relative path is not allowed"),
    "traversal in a file URL": ("file://{store}/../{foreign_from_store}/evil.mar", 404, "Relative path is not allowed"),
}


@pytest.mark.parametrize("form", OUTSIDE_FORMS)
def test_registration_from_outside_the_store_is_refused_in_every_form(live: LiveServer, foreign_store: Path,
                                                                      form: str) -> None:
    template, status, message = OUTSIDE_FORMS[form]
    store = live.server.model_store
    url = template.format(foreign=foreign_store, store=store,
                          foreign_from_store=os.path.relpath(foreign_store, store))
    before_models, before_files = set(live.client.list_models()), sorted(p.name for p in store.iterdir())
    try:
        with pytest.raises(UnsafeRegistration):
            live.client.register(url, model_name="outside", batch_size=1, max_batch_delay_ms=1)
        with pytest.raises(TorchServeError, match=message) as err:
            live.client.post_model({"url": url, "model_name": "outside", "batch_size": 1, "max_batch_delay": 1,
                                    "synchronous": "true"})
    finally:
        if "outside" in live.client.list_models():  # registered after all: don't leave it to later tests
            live.client.unregister("outside")
    assert err.value.status == status
    assert set(live.client.list_models()) == before_models
    assert sorted(p.name for p in store.iterdir()) == before_files  # nothing copied in


@pytest.mark.parametrize("name", ["../../x", "a b"])
def test_a_model_name_torchserve_could_never_unregister_does_not_stay_registered(live: LiveServer, name: str) -> None:
    """TorchServe 0.12 registers "../../x" and then no DELETE reaches it; our handler refuses to load under
    such a name, so the registration fails and TorchServe drops the model."""
    with pytest.raises(UnsafeRegistration):
        live.client.register("digits_mlp_onnx.mar", model_name=name, batch_size=1, max_batch_delay_ms=1)
    with pytest.raises(TorchServeError) as err:
        live.client.post_model({"url": "digits_mlp_onnx.mar", "model_name": name, "batch_size": 1,
                                "max_batch_delay": 1, "initial_workers": 1, "synchronous": "true"})
    assert err.value.status == 500
    assert name not in live.client.list_models()


def test_a_link_added_to_the_store_after_start_is_loaded_the_documented_gap(live: LiveServer, foreign_store: Path) -> None:
    """TorchServe follows symlinks in its store and no setting refuses them (SECURITY.md): the launcher
    refuses such a store at start, and after start only write access to the store stands in the way."""
    link = live.server.model_store / "linked_from_outside.mar"
    os.symlink(foreign_store / "evil.mar", link)
    try:
        live.client.register(link.name, model_name="linked_from_outside", batch_size=1, max_batch_delay_ms=1)
        live.client.unregister("linked_from_outside")
    finally:
        link.unlink()


def test_describe_scale_unregister_round_trip(live: LiveServer) -> None:
    client = live.client
    client.register("digits_mlp_ts.mar", model_name="scratch", batch_size=4, max_batch_delay_ms=1)
    assert client.describe("scratch")[0]["batchSize"] == 4
    client.scale("scratch", 2)
    assert len(client.describe("scratch")[0]["workers"]) == 2
    client.unregister("scratch")
    with pytest.raises(TorchServeError) as err:
        client.describe("scratch")
    assert err.value.status == 404
    assert "scratch" not in client.list_models()


def test_unknown_model_is_404(live: LiveServer) -> None:
    response = live.client.predict_raw("no_such_model", b"{}", "application/json")
    assert response.status_code == 404


@pytest.mark.parametrize("form", ["json", "npy"])
def test_bodies_are_recognised_without_a_content_type_and_form_bodies_are_refused(live: LiveServer, form: str) -> None:
    """Without a content type a body is read by its bytes; with curl's default for --data
    (application/x-www-form-urlencoded, which TorchServe parses as form fields) it is a 415 naming the header."""
    instance = np.linspace(0, 1, 64, dtype=np.float32)
    body = json.dumps({"data": instance.tolist()}).encode() if form == "json" else npy_bytes(instance)
    plain = live.client.predict_raw("digits_mlp_onnx", body, None)
    assert plain.status_code == 200, plain.text
    assert plain.json() == live.client.predict_raw("digits_mlp_onnx", body, "application/json" if form == "json"
                                                   else NPY_CONTENT_TYPE).json()
    refused = live.client.predict_raw("digits_mlp_onnx", body, "application/x-www-form-urlencoded")
    if form == "npy" and refused.status_code == 500:
        # TorchServe's frontend cannot form-decode most binary bodies and answers before any handler runs.
        assert refused.json()["type"] == "ErrorDataDecoderException", refused.text
    else:
        assert refused.status_code == 415, refused.text
        assert "set the Content-Type header to application/json" in refused.json()["error"]["message"]
    garbage = live.client.predict_raw("digits_mlp_onnx", b"GIF89a", None)
    assert garbage.status_code == 415 and "has no content type" in garbage.json()["error"]["message"]


def test_worker_sockets_live_in_the_servers_own_temp_folder(live: LiveServer) -> None:
    """A worker listens on a unix socket named by its port (9000 upward in every TorchServe) in the JVM's temp
    folder, which TorchServe takes from TEMP, not TMPDIR. Left in the shared /tmp, a second server's worker
    removes the first one's socket and takes its name."""
    import psutil

    frontend = psutil.Process(live.server.process.pid)
    sockets = [argv[argv.index("--sock-name") + 1] for child in frontend.children(recursive=True)
               for argv in [child.cmdline()] if "--sock-name" in argv]
    assert sockets, "no worker found"
    assert all(Path(s).is_relative_to(live.server.workdir) or Path(s).parent.name.startswith(PRIVATE_SOCKETS_PREFIX)
               for s in sockets), sockets
