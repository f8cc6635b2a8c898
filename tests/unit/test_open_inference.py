"""Open Inference Protocol (v2): bodies built and read by Triton's own client, in JSON and with the
binary tensor extension, through the handler as TorchServe's worker calls it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton

from handlers.errors import MalformedRequest
from handlers.bodies.open_inference import (HEADER_LENGTH, OUTPUTS, V2Options, classification_tensors, decode_v2, encode_v2,
                                    split_binary)
from support.models import eager_predictions
from support.torchserve_context import run_handler_raw


def triton_request(x: np.ndarray, binary_input: bool, binary_outputs: bool | None = None,
                   outputs: tuple[str, ...] | None = None, name: str = "pixels") -> tuple:
    """(body, content type, headers) exactly as tritonclient.http would send them."""
    tensor = triton.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32), binary_data=binary_input)
    requested = None if outputs is None else [triton.InferRequestedOutput(o, binary_data=bool(binary_outputs))
                                              for o in outputs]
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], requested, request_id="t-1")
    return body, "", {} if json_size is None else {HEADER_LENGTH: str(json_size)}


def triton_result(body: bytes, headers: dict) -> triton.InferResult:
    length = headers.get(HEADER_LENGTH)
    return triton.InferResult.from_response_body(body, header_length=None if length is None else int(length))


@pytest.mark.parametrize("binary_input", [False, True])
@pytest.mark.parametrize("binary_outputs", [False, True])
def test_the_triton_client_reads_what_we_answer(mlp_handler, binary_input: bool, binary_outputs: bool) -> None:
    handler, context, built = mlp_handler
    x = built.x_test[:6]
    [(status, body, headers)] = run_handler_raw(handler, context, [
        triton_request(x, binary_input, binary_outputs, outputs=OUTPUTS)])
    assert status == 200
    assert (HEADER_LENGTH in headers) == binary_outputs
    result = triton_result(body, headers)
    expected = eager_predictions(built.model, x)
    assert result.get_response()["id"] == "t-1"
    assert result.as_numpy("class").tolist() == expected.tolist()
    assert result.as_numpy("label").astype(str).tolist() == [str(c) for c in expected]
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1.0, atol=1e-5)


def test_only_the_requested_outputs_come_back(mlp_handler) -> None:
    handler, context, built = mlp_handler
    [(status, body, headers)] = run_handler_raw(handler, context, [
        triton_request(built.x_test[:2], binary_input=True, binary_outputs=True, outputs=("class",))])
    response = triton_result(body, headers).get_response()
    assert status == 200 and [o["name"] for o in response["outputs"]] == ["class"]


def test_binary_and_plain_requests_share_a_batch_and_bad_ones_fail_alone(mlp_handler) -> None:
    handler, context, built = mlp_handler
    x = built.x_test[:4]
    good = triton_request(x[:2], binary_input=True, binary_outputs=True, outputs=OUTPUTS)
    short = (good[0][:-4], "", good[2])  # the binary section lost its last float
    plain = (json.dumps({"data": x[2:3].tolist()}).encode(), "application/json")
    no_type_json = triton_request(x[3:4], binary_input=False)  # no outputs named: the client asks all in binary
    answers = run_handler_raw(handler, context, [good, short, plain, no_type_json])
    assert [status for status, _, _ in answers] == [200, 400, 200, 200]
    assert triton_result(answers[0][1], answers[0][2]).as_numpy("class").tolist() == eager_predictions(built.model, x[:2]).tolist()
    assert json.loads(answers[1][1]) == {"error": "the binary section holds 508 bytes; the input declares 512"}
    assert json.loads(answers[2][1])["predictions"][0]["class"] == eager_predictions(built.model, x[2:3])[0]
    assert triton_result(answers[3][1], answers[3][2]).as_numpy("class").tolist() == eager_predictions(built.model, x[3:4]).tolist()


@pytest.mark.parametrize("document, binary, message", [
    ({"inputs": [{"name": "pixels", "shape": [1, 2], "datatype": "FP32",
                  "parameters": {"binary_data_size": 8}}]}, None, "has no Inference-Header-Content-Length header"),
    ({"inputs": [{"name": "pixels", "shape": [1, 2], "datatype": "FP32",
                  "parameters": {"binary_data_size": 4}}]}, b"\0" * 4, "binary_data_size is 4; shape [1, 2] of float32 needs 8 bytes"),
    ({"inputs": [{"name": "pixels", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, b"\0" * 8,
     "the body holds 8 binary bytes but no input declares binary_data_size"),
    ({"inputs": [{"name": "pixels", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
      "outputs": [{"name": "logits"}]}, None, "v2 outputs ['logits'] are not produced"),
    ({"inputs": [{"name": "pixels", "shape": [1, 2], "datatype": "FP32", "data": [1, 2], "extra": 1}]}, None,
     "v2 input has unknown keys ['extra']"),
    ({"inputs": [{"name": "pixels", "shape": [True, 2], "datatype": "FP32", "data": [1, 2]}]}, None,
     "v2 shape must be a list of non-negative integers"),
    ({"inputs": [{"shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, None, "v2 input needs ['name']"),
    ({"inputs": [{"name": "pixels", "shape": [1, 2], "datatype": "FP32", "data": [1, "2"]}]}, None,
     "v2 data must be numbers for datatype FP32"),
    ({"inputs": [{"name": "pixels", "shape": [1, 2], "datatype": "FP32", "data": [True, False]}]}, None,
     "v2 data must be numbers for datatype FP32"),
    ({"inputs": [{"name": "pixels", "shape": [2, 2], "datatype": "FP32", "data": [[0.5, 1], [True, 0.25]]}]}, None,
     "v2 data must be numbers for datatype FP32"),
])
def test_malformed_v2_requests_name_what_was_wrong(document: dict, binary: bytes | None, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_v2(document, "pixels", None if binary is None else memoryview(binary))


@pytest.mark.parametrize("body, header, message", [
    (b'{"inputs":[]}', "abc", "Inference-Header-Content-Length must be a byte count of 1 to 10 digits 0-9; got 'abc'"),
    (b'{"inputs":[]}', "1_3", "digits 0-9; got '1_3'"),
    (b'{"inputs":[]}', " 13", "digits 0-9; got ' 13'"),
    (b'{"inputs":[]}', "99", "Inference-Header-Content-Length is 99; the body holds 13 bytes"),
    ({"inputs": []}, "13", "Inference-Header-Content-Length is set but the body is not binary"),
])
def test_a_bad_binary_header_is_a_400(body, header: str, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message):
        split_binary(body, header)


def test_binary_tensors_are_little_endian_and_bytes_are_length_prefixed() -> None:
    probabilities = np.array([[0.25, 0.75]], dtype=np.float64)
    body, length = encode_v2(classification_tensors(probabilities, ["cat", "dog"]), "m",
                             V2Options(binary_outputs=frozenset(OUTPUTS)))
    header = json.loads(body[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [8, 8, 4 + 3]
    assert body[length:] == (np.array([0.25, 0.75], "<f4").tobytes() + np.array([1], "<i8").tobytes()
                             + b"\x03\x00\x00\x00dog")
