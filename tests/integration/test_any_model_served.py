"""Models beyond the digits demo in a real TorchServe: a regressor answers its number, an embedder its
vector, and a two-input text model serves variable-length requests in shared (padded) batches, each
equal to the in-process answer, with bad requests mixed into the batches."""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from servekit.serve.client import NPY_CONTENT_TYPE, npy_bytes
from support.any_models import ANY_MODELS
from support.serving import (BATCH_SIZE, MAX_BATCH_DELAY_MS, LiveServer, batch_counters, mean_batch_size, run_archive_sh,
                             send_together)

pytestmark = pytest.mark.integration
JSON = "application/json"
NPZ = "application/x-npz"


@pytest.fixture(scope="module")
def served_any(live: LiveServer, model_store: Path, any_models: dict[str, Path]):
    """Every any-model archive (TorchScript and ONNX) registered with batching; unregistered afterwards."""
    result = run_archive_sh(model_store, *any_models.values())
    assert result.returncode == 0, result.stderr
    names = [f"{name}_{suffix}" for name in any_models for suffix in ("ts", "onnx")]
    for archive in names:
        live.client.register(f"{archive}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=MAX_BATCH_DELAY_MS)
    yield live.client
    for archive in names:
        live.client.unregister(archive)


def eager(name: str, *arrays: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return ANY_MODELS[name].load()(*(torch.from_numpy(a) for a in arrays)).numpy()


@pytest.mark.parametrize("fmt", ["ts", "onnx"])
def test_the_regressor_answers_its_number_in_shared_batches(served_any, fmt: str) -> None:
    x = np.random.default_rng(5).standard_normal((24, 13)).astype(np.float32)
    bodies = [(json.dumps({"data": row.tolist()}).encode(), JSON) if i % 2 else (npy_bytes(row), NPY_CONTENT_TYPE)
              for i, row in enumerate(x)]
    bodies.append((json.dumps({"data": x[0, :5].tolist()}).encode(), JSON))  # wrong shape, same batches
    before = batch_counters(served_any, f"regressor_{fmt}")
    responses = send_together(served_any, f"regressor_{fmt}", bodies)
    assert [r.status_code for r in responses] == [200] * len(x) + [422]
    served = [r.json()["predictions"][0]["value"] for r in responses[:-1]]
    np.testing.assert_allclose(served, eager("regressor", x)[:, 0], atol=1e-5)
    assert all(set(r.json()["predictions"][0]) == {"value"} for r in responses[:-1])  # never a class
    assert mean_batch_size(served_any, f"regressor_{fmt}", before, len(x)) > 1


def test_the_embedder_answers_unit_vectors_json_and_binary(served_any) -> None:
    x = np.random.default_rng(6).standard_normal((4, 8)).astype(np.float32)
    expected = eager("embedder", x)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    as_json = served_any.predict_raw("embedder_onnx", json.dumps({"data": x.tolist()}).encode(), JSON).json()
    np.testing.assert_allclose([p["embedding"] for p in as_json["predictions"]], expected, atol=1e-5)
    response = served_any.session.post(f"{served_any.inference_url}/predictions/embedder_ts", data=npy_bytes(x),
                                       headers={**served_any._auth("inference"), "Content-Type": NPY_CONTENT_TYPE,
                                                "Accept": NPY_CONTENT_TYPE}, timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith(NPY_CONTENT_TYPE)
    np.testing.assert_allclose(np.load(io.BytesIO(response.content)), expected, atol=1e-5)


def text_bodies(rng: np.random.Generator, lengths: list[int]) -> tuple[list[tuple[bytes, str]], list[tuple]]:
    """Requests of these lengths, a third each as JSON inputs, .npz and v2 JSON."""
    bodies, instances = [], []
    for i, length in enumerate(lengths):
        ids, mask = rng.integers(0, 50, size=length), np.ones(length, np.int64)
        instances.append((ids, mask))
        if i % 3 == 0:
            bodies.append((json.dumps({"inputs": {"input_ids": ids.tolist(), "attention_mask": mask.tolist()}}
                                      ).encode(), JSON))
        elif i % 3 == 1:
            buffer = io.BytesIO()
            np.savez(buffer, input_ids=ids, attention_mask=mask)
            bodies.append((buffer.getvalue(), NPZ))
        else:
            bodies.append((json.dumps({"inputs": [
                {"name": "input_ids", "shape": [1, length], "datatype": "INT64", "data": ids.tolist()},
                {"name": "attention_mask", "shape": [1, length], "datatype": "INT64", "data": mask.tolist()}]}
            ).encode(), JSON))
    return bodies, instances


@pytest.mark.parametrize("fmt", ["ts", "onnx"])
def test_variable_length_requests_share_padded_batches_and_match_in_process(served_any, fmt: str) -> None:
    rng = np.random.default_rng(7)
    lengths = [int(n) for n in rng.integers(1, 17, size=24)]
    bodies, instances = text_bodies(rng, lengths)
    bad = [(json.dumps({"inputs": {"input_ids": [1, 2, 3], "attention_mask": [1, 1]}}).encode(), JSON),
           (json.dumps({"inputs": {"input_ids": [1, 2, 300], "attention_mask": [1, 1, 1]}}).encode(), JSON)]
    before = batch_counters(served_any, f"text_{fmt}")
    responses = send_together(served_any, f"text_{fmt}", bodies + bad)
    assert [r.status_code for r in responses] == [200] * len(bodies) + [422, 422]
    for response, (ids, mask) in zip(responses, instances):
        answer = response.json()
        served = (answer["predictions"][0]["class"] if "predictions" in answer
                  else {o["name"]: o for o in answer["outputs"]}["class"]["data"][0])
        assert served == int(eager("text", ids[None], mask[None]).argmax())
    assert mean_batch_size(served_any, f"text_{fmt}", before, len(bodies)) > 1
    # Length-aware batching reports how much of what the model computed was real (handlers/sub_batches.py).
    deadline, efficiency = time.monotonic() + 15, []
    while time.monotonic() < deadline and not efficiency:
        efficiency = [float(v) for v in re.findall(rf'^HandlerPaddingEfficiency{{.*ModelName="text_{fmt}".*}} ([\d.]+)$',
                                                   served_any.metrics(), re.M)]
        time.sleep(0.5)
    assert efficiency and 0.85 <= efficiency[0] <= 1.0
