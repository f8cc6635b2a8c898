"""Models beyond classification through the handler as TorchServe's worker calls it: regression,
embedding, two named inputs of variable length (JSON, .npz, v2 JSON and binary), padding, bad inputs."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import tritonclient.http as triton

from handlers.handler import InferenceHandler
from handlers.bodies.open_inference import HEADER_LENGTH
from support.any_models import ANY_MODELS
from support.any_models import ARTIFACTS
from support.torchserve_context import make_context, run_handler_raw

JSON = "application/json"
NPY_ANSWER = {"Accept": "application/x-npy"}


def handler_for(directory, artifact: str):
    context = make_context(directory, artifact)
    handler = InferenceHandler()
    handler.initialize(context)
    return handler, context


def eager(name: str, *arrays: np.ndarray):
    with torch.inference_mode():
        return ANY_MODELS[name].load()(*(torch.from_numpy(a) for a in arrays))


def npz_body(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_the_regressor_answers_its_number(any_models, artifact: str) -> None:
    handler, context = handler_for(any_models["regressor"], artifact)
    x = np.random.default_rng(1).standard_normal((3, 13)).astype(np.float32)
    answers = run_handler_raw(handler, context, [
        (json.dumps({"data": x[0].tolist()}).encode(), JSON),
        (json.dumps({"data": x[1:].tolist()}).encode(), JSON, NPY_ANSWER),
        (json.dumps({"data": x[0, :12].tolist()}).encode(), JSON)])
    assert [status for status, _, _ in answers] == [200, 200, 422]
    expected = eager("regressor", x).numpy()
    [row] = json.loads(answers[0][1])["predictions"]
    assert set(row) == {"value"} and row["value"] == pytest.approx(float(expected[0, 0]), abs=1e-5)
    assert answers[1][2]["content-type"] == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(answers[1][1])), expected[1:], atol=1e-5)
    assert "expected [13] or [N, 13]" in json.loads(answers[2][1])["error"]["message"]


def test_several_outputs_are_answered_by_name_in_json_and_v2(any_models) -> None:
    handler, context = handler_for(any_models["two_heads"], "model.onnx")
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    v2 = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
    answers = run_handler_raw(handler, context, [(json.dumps({"data": x.tolist()}).encode(), JSON),
                                                 (json.dumps(v2).encode(), JSON)])
    price, spread = (t.numpy() for t in eager("two_heads", x))
    rows = json.loads(answers[0][1])["predictions"]
    assert [r["price"] for r in rows] == pytest.approx(price.tolist(), abs=1e-5)
    assert rows[1]["range"] == pytest.approx(spread[1].tolist(), abs=1e-5)
    outputs = {o["name"]: o for o in json.loads(answers[1][1])["outputs"]}
    assert outputs["range"]["shape"] == [2, 2] and outputs["price"]["shape"] == [2]


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_embeddings_are_normalised_and_binary_on_request(any_models, artifact: str) -> None:
    handler, context = handler_for(any_models["embedder"], artifact)
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    answers = run_handler_raw(handler, context, [(json.dumps({"data": x.tolist()}).encode(), JSON),
                                                 (json.dumps({"data": x.tolist()}).encode(), JSON, NPY_ANSWER)])
    vectors = eager("embedder", x).numpy()
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    served = [row["embedding"] for row in json.loads(answers[0][1])["predictions"]]
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(np.load(io.BytesIO(answers[1][1])), expected, atol=1e-5)


def text_request(rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 50, size=length), np.ones(length, np.int64)


def triton_text(ids: np.ndarray, mask: np.ndarray, binary: bool) -> tuple:
    tensors = []
    for name, array in (("input_ids", ids), ("attention_mask", mask)):
        tensor = triton.InferInput(name, [1, len(array)], "INT64")
        tensor.set_data_from_numpy(array[None].astype(np.int64), binary_data=binary)
        tensors.append(tensor)
    body, json_size = triton.InferenceServerClient.generate_request_body(tensors, request_id="t")
    return body, "", {} if json_size is None else {HEADER_LENGTH: str(json_size)}


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_two_inputs_of_different_lengths_share_a_batch_and_bad_ones_fail_alone(any_models, artifact: str) -> None:
    handler, context = handler_for(any_models["text"], artifact)
    rng = np.random.default_rng(4)
    requests = [text_request(rng, length) for length in (3, 16, 1, 9, 5)]
    bodies = [
        (json.dumps({"inputs": {"input_ids": requests[0][0].tolist(), "attention_mask": requests[0][1].tolist()}}
                    ).encode(), JSON),
        (npz_body(input_ids=requests[1][0], attention_mask=requests[1][1]), "application/x-npz"),
        triton_text(*requests[2], binary=True),
        triton_text(*requests[3], binary=False),
        (npz_body(input_ids=requests[4][0], attention_mask=requests[4][1]), ""),
        # bad ones, mixed in:
        (json.dumps({"inputs": {"input_ids": [1, 2, 3], "attention_mask": [1, 1]}}).encode(), JSON),
        (json.dumps({"inputs": {"input_ids": [1, 2, 3]}}).encode(), JSON),
        (json.dumps({"inputs": {"input_ids": [1, 2, 99], "attention_mask": [1, 1, 1]}}).encode(), JSON),
        (json.dumps({"inputs": {"input_ids": list(range(17)), "attention_mask": [1] * 17}}).encode(), JSON),
        (json.dumps({"data": [1, 2, 3]}).encode(), JSON),
        (json.dumps({"inputs": {"input_ids": [1.5], "attention_mask": [1]}}).encode(), JSON),
    ]
    answers = run_handler_raw(handler, context, bodies)
    assert [status for status, _, _ in answers] == [200] * 5 + [422, 422, 422, 422, 400, 422]
    assert all("X-Batch-Instances" not in headers for _, _, headers in answers)
    messages = [json.loads(body)["error"]["message"] for _, body, _ in answers[5:]]
    assert "input 'attention_mask' has length 2 on dim1; input 'input_ids' has 3" in messages[0]
    assert "this model takes ['input_ids', 'attention_mask']" in messages[1]
    assert "above the allowed maximum 49" in messages[2]
    assert "expected [1..16] or [N, 1..16]" in messages[3]
    assert 'send JSON {"inputs"' in messages[4]
    model = ANY_MODELS["text"].load()
    for (ids, mask), (_, body, headers) in zip(requests, answers[:5]):
        with torch.inference_mode():
            expected = int(model(torch.from_numpy(ids[None]), torch.from_numpy(mask[None])).argmax())
        if HEADER_LENGTH in headers or json.loads(body[:int(headers.get(HEADER_LENGTH, len(body)))]).get("outputs"):
            result = triton.InferResult.from_response_body(
                body, header_length=int(headers[HEADER_LENGTH]) if HEADER_LENGTH in headers else None)
            assert result.as_numpy("class").tolist() == [expected]
        else:
            assert json.loads(body)["predictions"][0]["class"] == expected


def test_a_multi_label_classifier_answers_every_class_past_the_threshold(tmp_path) -> None:
    from servekit.cli import main
    from support.user_models import tiny_classifier

    assert main(["export", "--factory", "support.user_models:tiny_classifier", "--random-weights", "--name", "tags", "--task",
                 "classification", "--multi-label", "--threshold", "0.4", "--labels", "a,b,c",
                 "--input", "x:float32:4", "--build-dir", str(tmp_path)]) == 0
    handler, context = handler_for(tmp_path / "tags", "model.onnx")
    x = np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32)
    [(status, body, _)] = run_handler_raw(handler, context, [(json.dumps({"data": x.tolist()}).encode(), JSON)])
    with torch.inference_mode():
        probabilities = torch.sigmoid(tiny_classifier()(torch.from_numpy(x))).numpy()
    rows = json.loads(body)["predictions"]
    assert status == 200
    for row, expected in zip(rows, probabilities):
        assert row["classes"] == np.flatnonzero(expected >= 0.4).tolist()
        assert row["labels"] == ["abc"[c] for c in row["classes"]]
        np.testing.assert_allclose(row["probabilities"], expected, atol=1e-5)
