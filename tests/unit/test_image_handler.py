"""An image classifier through the handler as TorchServe's worker calls it: raw JPEG/PNG/WebP bodies,
base64 JSON (one and several), v2 BYTES tensors (JSON and binary), multipart form files, and bad images
mixed into the same batch; every good answer equals the in-process one."""
from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
import pytest
import torch
import yaml
from ts.protocol.otf_message_handler import create_predict_response
from ts.service import Service

from handlers.handler import InferenceHandler
from handlers.config import HandlerConfig
from handlers.bodies.open_inference import HEADER_LENGTH
from servekit.build.images import preprocess
from support.image_models import MAX_PIXELS, photos, png_bomb, tiny_vision
from support.torchserve_context import ARTIFACTS, make_context

JSON = "application/json"
NPY_ANSWER = {"Accept": "application/x-npy"}


def expected_probabilities(model_dir, images: list[bytes]) -> np.ndarray:
    """In-process: the same preprocessing (the handler's), the eager model, softmax."""
    config = HandlerConfig.from_model_yaml(yaml.safe_load((model_dir / "model-config.yaml").read_text()))
    batch = preprocess(images, config.signature.images["image"])
    with torch.inference_mode():
        return torch.softmax(tiny_vision()(torch.from_numpy(batch)), dim=1).numpy()


def run(handler, context, requests: list[list[tuple[str, object, str]]], headers: list[dict] | None = None):
    """Each request: its parameters (name, value, content type), as the worker hands them over."""
    batch = []
    for idx, parameters in enumerate(requests):
        extra = (headers or [{}] * len(requests))[idx]
        batch.append({"requestId": f"r{idx}".encode(),
                      "parameters": [{"name": n, "contentType": t, "value": v} for n, v, t in parameters],
                      "headers": [{"name": k.encode(), "value": v.encode()} for k, v in extra.items()]})
    request_headers, data, request_ids = Service.retrieve_data_for_inference(batch)
    context.request_ids, context.request_processor = request_ids, request_headers
    outputs = handler.handle(data, context)
    assert create_predict_response(outputs, request_ids, "Prediction success", 200, context=context)
    return [(context.get_response_status(i)[0], out) for i, out in enumerate(outputs)]


def body(value: object, content_type: str) -> list[tuple[str, object, str]]:
    return [("body", value, content_type)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(params=ARTIFACTS)
def image_handler(request, image_model):
    context = make_context(image_model, request.param, batch_size=16)
    handler = InferenceHandler()
    handler.initialize(context)
    return handler, context


def test_every_body_format_answers_like_in_process_with_bad_images_in_the_batch(image_handler, image_model) -> None:
    handler, context = image_handler
    pics = photos()
    jpeg, png, webp = pics["jpeg"], pics["png"], pics["webp"]
    v2_binary = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                             "parameters": {"binary_data_size": 8 + len(jpeg) + len(png)}}]}
    header = json.dumps(v2_binary).encode()
    v2_body = header + struct.pack("<I", len(jpeg)) + jpeg + struct.pack("<I", len(png)) + png
    requests = [
        body(jpeg, "image/jpeg"),                                                 # 0 raw JPEG
        body(png, "image/png"),                                                   # 1 raw PNG
        body(webp, "application/octet-stream"),                                   # 2 sniffed WebP
        body({"data": b64(jpeg)}, JSON),                                          # 3 base64 JSON
        body({"data": [b64(png), b64(webp)]}, JSON),                              # 4 several base64
        body({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(webp)]}]}, JSON),  # 5 v2
        body(v2_body, "application/octet-stream"),                                # 6 v2 binary
        [("file", jpeg, "image/jpeg"), ("second", png, "image/png")],             # 7 multipart, two files
        body(jpeg[: len(jpeg) // 3], "image/jpeg"),                               # 8 truncated
        body(b"GIF89a" + b"\0" * 30, "image/gif"),                                # 9 GIF by content type
        body(png_bomb(2000, 1000), "image/png"),                                  # 10 too many pixels
        body({"data": "not base64!"}, JSON),                                      # 11 bad base64
        body(np.zeros(3).tobytes(), "application/x-npy"),                         # 12 a tensor, not an image
        body(pics["cmyk jpeg"], "image/jpeg"),                                    # 13 CMYK converted
        [("file", b"GIF89a" + b"\0" * 30, "application/octet-stream")],            # 14 one multipart GIF file
    ]
    headers = [{}] * len(requests)
    headers[6] = {HEADER_LENGTH: str(len(header))}
    headers[1] = NPY_ANSWER
    answers = run(handler, context, requests, headers)
    statuses = [status for status, _ in answers]
    assert statuses == [200] * 8 + [400, 415, 413, 400, 415, 200, 415], [a[1][:160] for a in answers]
    messages = {i: json.loads(answers[i][1]) for i in (8, 9, 10, 11, 12, 14)}
    assert "truncated" in messages[8]["error"]["message"]
    assert "image/gif" in messages[9]["error"]["message"]
    assert "2,000,000 pixels" in messages[10]["error"]["message"] and f"{MAX_PIXELS:,}" in messages[10]["error"]["message"]
    assert "base64" in messages[11]["error"]["message"]
    assert "takes images" in messages[12]["error"]["message"]
    assert "is GIF" in messages[14]["error"]["message"]

    expected = expected_probabilities(image_model, [jpeg, png, webp, pics["cmyk jpeg"]])
    def top(answer, row=0):
        return json.loads(answer[1])["predictions"][row]["top_k"][0]["probability"]
    for idx, k in ((0, 0), (3, 0), (13, 3)):
        assert top(answers[idx]) == pytest.approx(expected[k].max(), abs=1e-5)
    np.testing.assert_allclose(np.load(io.BytesIO(answers[1][1])), expected[1:2], atol=1e-5)
    assert top(answers[2]) == pytest.approx(expected[2].max(), abs=1e-5)
    assert [top(answers[4], r) for r in (0, 1)] == pytest.approx(expected[1:3].max(axis=1), abs=1e-5)
    v2 = {o["name"]: o for o in json.loads(answers[5][1])["outputs"]}
    np.testing.assert_allclose(v2["probabilities"]["data"], expected[2], atol=1e-5)
    v2_bin = json.loads(answers[6][1])  # JSON answer: the request asked for no binary outputs
    np.testing.assert_allclose(np.reshape(v2_bin["outputs"][0]["data"], (2, 3)), expected[:2], atol=1e-5)
    assert [top(answers[7], r) for r in (0, 1)] == pytest.approx(expected[:2].max(axis=1), abs=1e-5)


def test_v2_errors_are_answered_in_the_protocols_format(image_handler) -> None:
    handler, context = image_handler
    fp32 = {"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}
    count = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(photos()["jpeg"])]}]}
    answers = run(handler, context, [body(fp32, JSON), body(count, JSON)])
    assert [s for s, _ in answers] == [400, 400]
    assert "BYTES" in json.loads(answers[0][1])["error"]
    assert "says 2 images" in json.loads(answers[1][1])["error"]


def test_a_model_without_image_inputs_still_refuses_jpeg(mlp_handler) -> None:
    handler, context, _ = mlp_handler
    [(status, answer)] = run(handler, context, [body(photos()["jpeg"], "image/jpeg")])
    assert status == 415 and "image/jpeg" in json.loads(answer)["error"]["message"]


def test_a_decode_pool_answers_exactly_like_serial_decoding(image_model) -> None:
    pics = photos()
    requests = [body(pics[k], "image/jpeg") for k in ("jpeg", "cmyk jpeg", "exif rotated")]
    requests.append(body(pics["jpeg"][:500], "image/jpeg"))
    answers = {}
    for threads in (1, 2):
        context = make_context(image_model, "model.onnx", batch_size=16)
        context.model_yaml_config["handler"]["decode_threads"] = threads
        handler = InferenceHandler()
        handler.initialize(context)
        assert (handler.pipeline.decode_pool is None) == (threads == 1)
        answers[threads] = run(handler, context, requests)
    assert [s for s, _ in answers[2]] == [200, 200, 200, 400]
    assert answers[1] == answers[2]


def test_too_many_images_in_one_request_are_refused_before_decoding(image_handler) -> None:
    handler, context = image_handler
    bomb = b64(png_bomb(5000, 5000))  # refused by the count, before its header is read
    answers = run(handler, context, [body({"data": [bomb] * 65}, JSON), body(photos()["jpeg"], "image/jpeg")])
    assert [s for s, _ in answers] == [413, 200]
    assert "holds 65 images; at most 64 per request" in json.loads(answers[0][1])["error"]["message"]
