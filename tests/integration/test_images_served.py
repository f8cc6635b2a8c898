"""An image classifier in a real TorchServe: real photographs sent raw, as base64 JSON, as v2 BYTES
tensors (JSON and binary) and as multipart form files, with bad images in the same batches; every 200
equals the in-process answer (the handler's own preprocessing, the eager model)."""
from __future__ import annotations

import base64
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from handlers.config import HandlerConfig
from handlers.bodies.open_inference import HEADER_LENGTH
from servekit.measure.bad_inputs import bad_images
from servekit.build.images import preprocess
from servekit.build.model_config import write_model_config
from servekit.build.model_dir import seal
from servekit.measure.reliability import run_matrix
from support.image_models import MAX_PIXELS, NAME, photos, tiny_vision
from support.serving import (BATCH_SIZE, MAX_BATCH_DELAY_MS, LiveServer, batch_counters, call_together, mean_batch_size,
                             run_archive_sh)

pytestmark = pytest.mark.integration
JSON = "application/json"


@pytest.fixture(scope="module")
def served_images(live: LiveServer, model_store: Path, image_model: Path, tmp_path_factory: pytest.TempPathFactory):
    result = run_archive_sh(model_store, roomy_batches(image_model, tmp_path_factory.mktemp("images") / NAME))
    assert result.returncode == 0, result.stderr
    names = [f"{NAME}_{fmt}" for fmt in ("ts", "onnx")]
    for archive in names:
        live.client.register(f"{archive}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=MAX_BATCH_DELAY_MS)
    yield live.client
    for archive in names:
        live.client.unregister(archive)


def roomy_batches(image_model: Path, copy: Path) -> Path:
    """The tiny model with a batch pixel budget for a full batch of these photos: its default (twice one request's
    1 MP) would answer some of them 429 "retry" (tests/unit/test_hostile_bodies.py covers that budget)."""
    shutil.copytree(image_model, copy)
    config = yaml.safe_load((copy / "model-config.yaml").read_text())
    config["handler"]["input"]["image"]["max_batch_pixels"] = BATCH_SIZE * MAX_PIXELS
    write_model_config(copy / "model-config.yaml", config)
    seal(copy)
    return copy


def in_process(image_model: Path, images: list[bytes]) -> np.ndarray:
    config = HandlerConfig.from_model_yaml(yaml.safe_load((image_model / "model-config.yaml").read_text()))
    with torch.inference_mode():
        logits = tiny_vision()(torch.from_numpy(preprocess(images, config.signature.images["image"])))
    return torch.softmax(logits, dim=1).numpy()



def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("fmt", ["ts", "onnx"])
def test_real_photos_in_every_body_format_share_batches_with_bad_images(served_images, image_model, fmt: str) -> None:
    client, model = served_images, f"{NAME}_{fmt}"
    pics = photos()
    jpeg, png, webp = pics["jpeg"], pics["png"], pics["webp"]
    auth = client._auth("inference")
    url = f"{client.inference_url}/predictions/{model}"
    v2_url = f"{client.inference_url}/v2/models/{model}/infer"
    header = json.dumps({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 8 + len(jpeg) + len(png)}}],
                         "outputs": [{"name": "probabilities"}]}).encode()
    v2_binary = header + struct.pack("<I", len(jpeg)) + jpeg + struct.pack("<I", len(png)) + png

    def post(body: bytes, content_type: str, target: str = url, **headers: str):
        return lambda: client.session.post(target, data=body, timeout=60,
                                           headers={**auth, "Content-Type": content_type, **headers})

    good = [
        (post(jpeg, "image/jpeg"), [jpeg]),
        (post(png, "image/png"), [png]),
        (post(webp, "image/webp"), [webp]),
        (post(json.dumps({"data": b64(jpeg)}).encode(), JSON), [jpeg]),
        (post(json.dumps({"data": [b64(png), b64(webp)]}).encode(), JSON), [png, webp]),
        (post(json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(webp)]}]}
                         ).encode(), JSON, v2_url), [webp]),
        (post(v2_binary, "application/octet-stream", v2_url, **{HEADER_LENGTH: str(len(header))}), [jpeg, png]),
        (lambda: client.session.post(url, files={"photo": ("china.jpg", jpeg, "image/jpeg")}, headers=auth,
                                     timeout=60), [jpeg]),
        (lambda: client.session.post(url, files={"a": ("a.png", png, "image/png"), "b": ("b.webp", webp, "image/webp")},
                                     headers=auth, timeout=60), [png, webp]),
        # curl -F file=@a.jpg -F file=@b.png -F file=@c.webp: one name, three images, three answers in order
        (lambda: client.session.post(url, files=[("file", ("a.jpg", jpeg, "image/jpeg")), ("file", ("b.png", png, "image/png")),
                                                 ("file", ("c.webp", webp, "image/webp"))], headers=auth, timeout=60),
         [jpeg, png, webp]),
        (post(pics["cmyk jpeg"], "image/jpeg"), [pics["cmyk jpeg"]]),
        (post(pics["exif rotated"], "image/jpeg"), [pics["exif rotated"]]),
    ]
    bad = [(post(jpeg[:4000], "image/jpeg"), 400), (post(b"GIF89a" + b"\0" * 30, "image/gif"), 415),
           (lambda: client.session.post(url, files={"photo": ("x.bmp", b"BM" + b"\0" * 60, "application/octet-stream")},
                                        headers=auth, timeout=60), 415)]
    before = batch_counters(client, model)
    responses = call_together([call for call, _ in good] + [call for call, _ in bad])
    assert [r.status_code for r in responses] == [200] * len(good) + [status for _, status in bad], \
        [r.text[:200] for r in responses]
    for response, (_, images) in zip(responses, good):
        expected = in_process(image_model, images)
        answer = response.json()
        if "outputs" in answer:
            served = np.reshape({o["name"]: o for o in answer["outputs"]}["probabilities"]["data"], expected.shape)
            np.testing.assert_allclose(served, expected, atol=1e-5)
        else:
            rows = answer["predictions"]
            assert [r["class"] for r in rows] == expected.argmax(axis=1).tolist()
            assert [r["top_k"][0]["probability"] for r in rows] == pytest.approx(expected.max(axis=1), abs=1e-5)
    assert mean_batch_size(client, model, before, sum(len(images) for _, images in good)) > 1


@pytest.mark.parametrize("fmt", ["ts", "onnx"])
def test_bad_image_matrix_in_shared_batches(served_images, fmt: str) -> None:
    cases = bad_images(MAX_PIXELS, "image")
    outcomes, good_failures = run_matrix(served_images, f"{NAME}_{fmt}", (), cases, BATCH_SIZE,
                                         good_request=(photos()["jpeg"], "image/jpeg"))
    failed = [(o.case, o.expected_status, o.status, o.message[:160]) for o in outcomes if not o.passed]
    assert not failed, failed
    assert good_failures == 0
