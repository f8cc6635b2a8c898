"""Assertions a mutation audit found missing: 19 hand-made bugs (one at a time) passed the whole suite.
Each test here fails on its bug: the comment above it names the mutation it catches."""
from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
import torch
import yaml

from handlers.bodies.encoded import b64_bytes, split_bytes_elements
from handlers.bodies.npy import decode_npy
from handlers.errors import InvalidInput, MalformedRequest, TooManyPixels
from handlers.image import ImagePreprocess
from handlers.signature import InputSpec, Range, Signature
from servekit.build.images import encode


# Mutation: the NaN/Inf check skipped when the input declares no range.
def test_nan_and_inf_are_refused_on_an_input_without_a_range() -> None:
    spec = InputSpec("x", (3,))
    for bad in (np.nan, np.inf, -np.inf):
        batch = np.array([[0.5, bad, 0.5]], np.float32)
        assert not spec.values_ok(batch)
        with pytest.raises(InvalidInput, match="NaN/Inf"):
            spec.check_values(batch)


# Mutation: a bool input takes any integer dtype.
def test_a_bool_input_refuses_integers() -> None:
    with pytest.raises(InvalidInput, match="expected bool"):
        InputSpec("flags", (2,), "bool").as_batch(np.array([1, 0]), 64)
    assert InputSpec("flags", (2,), "bool").as_batch(np.array([True, False]), 64).dtype == np.bool_


# Mutation: the integer range check dropped (-1 wraps to 255 as uint8).
def test_a_uint8_input_refuses_minus_one_and_256() -> None:
    spec = InputSpec("pixels", (2,), "uint8")
    for bad in (-1, 256):
        with pytest.raises(InvalidInput, match=r"outside uint8 \[0, 255\]"):
            spec.as_batch(np.array([bad, 3]), 64)
    assert spec.as_batch(np.array([0, 255]), 64).tolist() == [[0, 255]]


# Mutation: > turned into >= (or < into <=) in the range check.
def test_values_exactly_at_the_declared_bounds_pass_and_one_step_past_them_fail() -> None:
    spec = InputSpec("x", (2,), min_value=0.0, max_value=1.0)
    edge = np.array([[0.0, 1.0]], np.float32)
    assert spec.values_ok(edge)
    spec.check_values(edge)
    for past in (np.nextafter(np.float32(1.0), np.float32(2.0)), np.nextafter(np.float32(0.0), np.float32(-1.0))):
        batch = np.array([[0.5, past]], np.float32)
        assert not spec.values_ok(batch)
        with pytest.raises(InvalidInput, match="allowed m"):
            spec.check_values(batch)


# Mutation: the shared dynamic dimension takes the first (or loosest) range instead of the tightest.
def test_a_shared_dynamic_dimension_takes_the_tightest_range_of_its_inputs() -> None:
    signature = Signature((InputSpec("input_ids", ("1..128",), "int64"), InputSpec("attention_mask", ("4..64",), "int64")))
    assert signature.lengths() == (4, 34, 64)
    with pytest.raises(InvalidInput):  # 100 fits input_ids' range, not the mask's
        signature.check_request({"input_ids": np.ones((1, 100), np.int64), "attention_mask": np.ones((1, 100), np.int64)},
                                64)
    assert Range(4, 64).lengths() == (4, 34, 64)


def reference_preprocess(image: np.ndarray, side: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """An independent reference (torch, not our Pillow code): bilinear antialiased resize of a square image to
    side x side, scale to [0, 1], normalise, CHW."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(tensor, size=(side, side), mode="bilinear", antialias=True,
                                              align_corners=False)[0].numpy()
    return (resized / 255.0 - mean[:, None, None]) / std[:, None, None]


# Mutation: height and width swapped in the resize box (invisible on the demo's square, symmetric photos crops).
def test_image_preprocessing_matches_an_independent_reference_on_an_asymmetric_square_image() -> None:
    rows, cols = np.mgrid[0:64, 0:64]
    image = np.stack([rows * 4, cols * 2, (rows < 16) * 255], axis=2).astype(np.uint8)  # differs under a transpose
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    prep = ImagePreprocess(crop=(32, 32), resize=32, mean=tuple(mean), std=tuple(std))
    ours = prep.to_model([prep.decode_many([encode(image, "PNG")])])[0]
    expected = reference_preprocess(image, 32, mean, std)
    assert np.abs(ours - expected).max() < 2.5 / 255 / std.min()  # rounding to uint8 between the two steps
    transposed = reference_preprocess(np.ascontiguousarray(image.transpose(1, 0, 2)), 32, mean, std)
    assert np.abs(ours - transposed).max() > 0.5  # the test can tell a swap


# Mutation: 16-bit grey converted with convert("L") (clips at 255) instead of keeping its top 8 bits.
def test_sixteen_bit_pngs_are_scaled_to_eight_bits() -> None:
    from PIL import Image

    values = np.array([[0, 256, 32768, 65535]], np.uint16).repeat(4, axis=0)
    buffer = io.BytesIO()
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    image.save(buffer, "PNG")
    pixels = ImagePreprocess(crop=(4, 4), resize=4, mode="L").decode(buffer.getvalue())
    assert pixels.reshape(4, 4)[0].tolist() == [0, 1, 128, 255]


def one_image_json(count: int) -> bytes:
    tiny = base64.b64encode(encode(np.full((4, 4, 3), 120, np.uint8), "PNG")).decode()
    return json.dumps({"data": [tiny] * count}).encode()


# Mutation: the count check of a request's images off by one (> turned into >=).
def test_exactly_max_instances_images_are_accepted_and_one_more_refused(image_model) -> None:
    from handlers.handler import InferenceHandler
    from support.torchserve_context import body_request, make_context, run_handler_wire

    context = make_context(image_model, "model.pt")
    handler = InferenceHandler()
    handler.initialize(context)
    limit = handler.pipeline.config.max_instances
    answers = run_handler_wire(handler, context, [body_request(one_image_json(limit), "application/json"),
                                                  body_request(one_image_json(limit + 1), "application/json")])
    assert [status for status, _, _ in answers] == [200, 413]
    assert len(json.loads(answers[0][1])["predictions"]) == limit
    assert f"at most {limit} per request" in json.loads(answers[1][1])["error"]["message"]


# Mutation: base64 decoded without validate=True (junk characters silently dropped).
@pytest.mark.parametrize("junk", ["*", " ", "\n", "é", "-_"])
def test_base64_with_junk_characters_is_refused(junk: str) -> None:
    text = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()
    with pytest.raises(MalformedRequest, match="not valid base64"):
        b64_bytes(text[:12] + junk + text[12:], "'data'")


# Mutation: a BYTES element's length prefix not checked against what remains.
def test_a_v2_bytes_element_whose_length_prefix_overruns_is_refused() -> None:
    import struct

    ok = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 2) + b"de"
    assert [bytes(e) for e in split_bytes_elements(memoryview(ok))] == [b"abc", b"de"]
    with pytest.raises(MalformedRequest, match="element 1 declares 9 bytes; 2 remain"):
        split_bytes_elements(memoryview(struct.pack("<I", 3) + b"abc" + struct.pack("<I", 9) + b"de"))
    with pytest.raises(MalformedRequest, match="length prefix is cut off"):
        split_bytes_elements(memoryview(b"\x03\x00"))


# Mutation: the object-dtype check removed (a complete pickled .npy then failed only as "not numeric").
def test_an_object_npy_is_refused_for_being_object_not_for_being_short() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(MalformedRequest, match="need pickle"):
        decode_npy(buffer.getvalue())


# Mutation: >= turned into > for the multi-label threshold.
def test_the_multi_label_threshold_is_inclusive() -> None:
    from handlers.tasks.classification import Classification

    task = Classification(("a", "b", "c"), 3, multi_label=True, threshold=0.5)
    logits = np.array([[0.0, -0.001, 0.001]])  # sigmoid: exactly 0.5, just under, just over
    assert json.loads(task.json_rows([logits])[0])["classes"] == [0, 2]
    assert task.v2_tensors([logits])["predicted"][2].tolist() == [[True, False, True]]


# Mutation: every request of a batch answered with the first request's rows of member probabilities.
def test_member_probabilities_are_split_per_request(built_models, tmp_path) -> None:
    import shutil

    from handlers.handler import InferenceHandler
    from support.torchserve_context import body_request, make_context, run_handler_wire

    built = built_models["digits_mlp"]
    directory = shutil.copytree(built.directory, tmp_path / "member")
    config = yaml.safe_load((directory / "model-config.yaml").read_text())
    config["handler"]["output"] = "probabilities"
    (directory / "model-config.yaml").write_text(yaml.safe_dump(config))
    context = make_context(directory, "model.onnx")
    handler = InferenceHandler()
    handler.initialize(context)
    x = built.x_test[:3]
    answers = run_handler_wire(handler, context, [body_request(json.dumps({"data": x[:1].tolist()}).encode(), "application/json"),
                                                  body_request(json.dumps({"data": x[1:].tolist()}).encode(), "application/json")])
    rows = [np.load(io.BytesIO(body)) for _, body, _ in answers]
    with torch.inference_mode():
        expected = torch.softmax(built.model(torch.from_numpy(x)), 1).numpy()
    assert [r.shape for r in rows] == [(1, 10), (2, 10)]
    assert not np.allclose(expected[0], expected[1])  # rows that differ, so a mix-up shows
    np.testing.assert_allclose(np.concatenate(rows), expected, atol=1e-5)


class WrongRows:
    """A backend that answers one row fewer than it was given."""

    def run_named(self, batch):
        rows = next(iter(batch.values())).shape[0]
        return [np.zeros((rows - 1, 10), np.float32)]

    def describe(self) -> str:
        return "wrong rows"


# Mutation: the row-count check after the backend removed (answers then shifted between requests).
def test_a_backend_returning_the_wrong_row_count_raises(built_models) -> None:
    from handlers.bodies.request import RequestInput
    from handlers.config import HandlerConfig
    from handlers.pipeline import InferencePipeline

    config = HandlerConfig.from_model_yaml(yaml.safe_load((built_models["digits_mlp"].directory / "model-config.yaml").read_text()))
    pipeline = InferencePipeline(config, WrongRows())
    body = json.dumps({"data": built_models["digits_mlp"].x_test[:2].tolist()}).encode()
    with pytest.raises(RuntimeError, match="one row per input"):
        pipeline.run([RequestInput(body, "application/json")])


# Mutation: validation batches cut every row to the same length (no padding exercised).
def test_validation_batches_hold_padded_rows_and_one_full_length_row() -> None:
    from servekit.build.validate import validation_batch

    signature = Signature((InputSpec("ids", ("1..16",), "int64", pad_value=0),))
    heldout = {"ids": np.arange(1, 64 * 16 + 1).reshape(64, 16)}
    [batch] = validation_batch(heldout, signature, 7, 12)
    assert batch.shape == (7, 12)
    assert (batch[0] != 0).all()  # the longest instance sets the batch's length
    padded = [(row == 0).any() for row in batch[1:]]
    assert any(padded)


# Mutation: the worst difference across a model's outputs replaced by their mean.
def test_the_validation_diff_is_the_worst_output_not_their_mean() -> None:
    from servekit.build.validate import _compare_all

    expected = [np.zeros((2, 3)), np.zeros((2, 3))]
    actual = [np.zeros((2, 3)), np.array([[0.0, 0.0, 0.9], [0.0, 0.0, 0.0]])]
    result = _compare_all("x", 2, None, expected, actual, 1e-3, 1e-5)
    assert result.max_abs_diff == pytest.approx(0.9) and not result.passed


# Mutation: only too few labels refused (len(labels) < classes).
def test_too_many_labels_are_refused() -> None:
    from handlers.errors import ConfigError
    from servekit.build.export import ExportSpec
    from servekit.build.model_dir import check_label_count

    model = torch.nn.Linear(4, 3)
    with pytest.raises(ConfigError, match="4 labels given"):
        check_label_count(model, ExportSpec("x", (4,)), ("a", "b", "c", "d"))


# Mutation: validation.json removed after the artifacts are moved (it vouched for a half-moved export).
def test_validation_json_never_vouches_for_a_half_moved_export(built_models, tmp_path, monkeypatch) -> None:
    import shutil

    from servekit.build import model_dir
    from servekit.build.model_dir import VALIDATION_FILE

    target = shutil.copytree(built_models["digits_mlp"].directory, tmp_path / "out")
    staging = tmp_path / "staging"
    staging.mkdir()
    for name in ("model.pt", "model.onnx", "model-config.yaml"):
        shutil.copy(target / name, staging / name)
    real_replace, moved = os.replace, []

    def failing_replace(source, destination):
        if moved:
            raise OSError("disk full")
        moved.append(source)
        real_replace(source, destination)

    monkeypatch.setattr(model_dir.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        model_dir._move_into_place(staging, target, {"rtol": 1e-3})
    assert not (target / VALIDATION_FILE).exists()


# Mutation: the pixel check moved after image.load() (the bomb decoded first).
def test_the_max_pixels_refusal_happens_before_any_decode(monkeypatch) -> None:
    from PIL import ImageFile

    from servekit.measure.bad_inputs import png_declaring

    loads: set = set()
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.add(self.size) or real(self))
    prep = ImagePreprocess(crop=(8, 8), max_pixels=10_000)
    with pytest.raises(TooManyPixels, match="refused before decoding"):
        prep.decode(png_declaring(101, 100))
    assert not loads
    prep.decode(encode(np.zeros((100, 100, 3), np.uint8), "PNG"))  # at the cap: decoded
    assert loads == {(100, 100)}
