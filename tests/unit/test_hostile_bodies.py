"""Issue 20's hostile-input findings, each through the handler as TorchServe's worker calls it (the request
parsed from wire bytes by the worker's own reader) and each beside good requests of the same batch:
bounded work before the expensive step, no exception escaping one request, correct answers or a 4xx,
and messages that say what was wrong without echoing the client at length."""
from __future__ import annotations

import io
import json
import shutil
import time
import tracemalloc

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from handlers.bodies.npz import decode_npz
from handlers.errors import MalformedRequest
from handlers.handler import InferenceHandler
from servekit.build.images import encode, preprocess, sample_photos
from servekit.build.model_config import Batching
from servekit.build.model_dir import ModelBuild, build_model_dir
from handlers.signature import InputSpec, Signature
from servekit.measure.hostile_bodies import (DAMAGED_EXIF, jpeg_declaring_more_rows, jpeg_with_exif, lossless_webp,
                                             lying_npz, npy_raw, png_with_chunks)
from support.torchserve_context import body_request, make_context, run_handler_wire

JSON = "application/json"
NPY = "application/x-npy"


def loaded(model_dir, artifact: str = "model.onnx") -> tuple[InferenceHandler, object]:
    context = make_context(model_dir, artifact, batch_size=16)
    handler = InferenceHandler()
    handler.initialize(context)
    return handler, context


def js(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def mlp(built_models):
    built = built_models["digits_mlp"]
    handler, context = loaded(built.directory)
    good = body_request(js({"data": built.x_test[0].tolist()}), JSON)
    [(_, alone, _)] = run_handler_wire(handler, context, [good])
    return handler, context, built, good, alone


def with_good(mlp, *requests):
    """Send ``requests`` with the good request after them; check it is answered as when alone."""
    handler, context, _, good, alone = mlp
    answers = run_handler_wire(handler, context, [*requests, good])
    assert answers[-1][:2] == (200, alone)
    return answers[:-1]


def message(body: bytes) -> str:
    document = json.loads(body)
    error = document["error"]
    return error if isinstance(error, str) else error["message"]


# --- 1. answers are bounded by construction --------------------------------------------------------

def test_echoed_client_text_is_cut_so_an_error_answer_stays_small(mlp) -> None:
    name = mlp[2].contract.name
    huge = "é" * 1_000_000  # 6 MB once JSON-escaped: the answer once passed max_response_size
    answers = with_good(mlp, body_request(js({"data": [0.5] * 64, huge: 1}), JSON),
                        body_request(js({"inputs": [{"name": huge, "shape": [1, 64], "datatype": "FP32",
                                                     "data": [0.5] * 64}]}), JSON),
                        body_request(js({"inputs": {huge: [0.5] * 64}}), JSON))
    assert [status for status, _, _ in answers] == [400, 400, 400]
    assert all(len(body) < 1000 for _, body, _ in answers)
    assert "1,000,000 characters" in message(answers[1][1])
    assert name  # the model's own names are still spelled out
    assert "exactly one key" in message(answers[0][1])


def test_an_error_message_is_cut_even_where_a_raise_forgot_to_cut_it() -> None:
    from handlers.encode import encode_error
    from handlers.errors import MAX_MESSAGE_CHARS

    error = MalformedRequest("unknown key " + "é" * 100_000)
    assert len(error.message) < MAX_MESSAGE_CHARS + 64 and "100,012 characters" in error.message
    assert len(encode_error(error)) < 8 * MAX_MESSAGE_CHARS
    assert MalformedRequest("short").message == "short"


def test_a_v2_id_is_echoed_only_when_short_and_outputs_only_once(mlp) -> None:
    tensor = {"name": mlp[2].contract.name, "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}
    answers = with_good(mlp, body_request(js({"id": "é" * 256, "inputs": [tensor]}), JSON),
                        body_request(js({"id": "é" * 257, "inputs": [tensor]}), JSON),
                        body_request(js({"inputs": [tensor], "outputs": [{"name": "probabilities"}] * 2}), JSON),
                        body_request(js({"id": {"a": 1}, "inputs": [tensor]}), JSON))
    assert [status for status, _, _ in answers] == [200, 400, 400, 400]
    assert json.loads(answers[0][1])["id"] == "é" * 256
    assert "at most 256" in message(answers[1][1])
    assert "more than once" in message(answers[2][1])
    assert "'id' must be a string" in message(answers[3][1])


def test_an_answer_over_the_response_limit_is_that_requests_413(built_models, tmp_path) -> None:
    built = built_models["digits_mlp"]
    directory = shutil.copytree(built.directory, tmp_path / "small_answers")
    config = yaml.safe_load((directory / "model-config.yaml").read_text())
    config["handler"]["max_response_bytes"] = 4096  # about 20 instances' JSON answers
    (directory / "model-config.yaml").write_text(yaml.safe_dump(config))
    handler, context = loaded(directory)
    answers = run_handler_wire(handler, context, [
        body_request(js({"data": built.x_test[:64].tolist()}), JSON),
        body_request(js({"data": built.x_test[:2].tolist()}), JSON),
        body_request(io_npy(built.x_test[:64]), NPY, {"Accept": "application/x-npy"}),
    ])
    assert [status for status, _, _ in answers] == [413, 200, 200]
    assert "at most 4,096" in message(answers[0][1]) and "binary answer" in message(answers[0][1])
    assert len(json.loads(answers[1][1])["predictions"]) == 2
    assert np.load(io.BytesIO(answers[2][1])).shape == (64, 10)  # the advice works: 2.6 KB as .npy


def io_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32))
    return buffer.getvalue()


# --- 2. bounded work before the expensive step -----------------------------------------------------

def test_an_npz_member_that_lies_about_its_size_is_refused_without_inflating_it() -> None:
    body = lying_npz(256 * 1024 * 1024)  # 256 MB of zeros in a quarter-megabyte body
    assert len(body) < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(MalformedRequest, match="damaged|inflates past"):
            decode_npz(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{peak:,} bytes allocated"  # zipfile's read() inflated it all first


def test_five_megabytes_of_text_are_cut_before_the_tokenizer_sees_them(bert_build) -> None:
    handler, context = loaded(bert_build.build_dir / "bert")
    encoder = handler.pipeline.text_encoder
    seen: list[int] = []

    class Recording:  # the real tokenizer, with the lengths it was handed written down
        def __init__(self, tokenizer) -> None:
            self.tokenizer = tokenizer

        def encode_batch(self, texts):
            seen.extend(len(t) for t in texts)
            return self.tokenizer.encode_batch(texts)

    encoder.tokenizer = Recording(encoder.tokenizer)
    long_text = "rain " * 1_000_000
    answers = run_handler_wire(handler, context, [body_request(long_text.encode(), "text/plain"),
                                                  body_request(js({"text": [long_text, "the match"]}), JSON)])
    assert [status for status, _, _ in answers] == [200, 200]
    assert max(seen) == encoder.max_chars == 64 * 32
    cut = json.loads(run_handler_wire(handler, context, [body_request(long_text[:encoder.max_chars].encode(),
                                                                      "text/plain")])[0][1])
    assert json.loads(answers[0][1]) == cut  # the cut text answers exactly as the whole one would


@pytest.fixture(scope="module")
def vision(image_model):
    return loaded(image_model, "model.pt")


def test_a_request_whose_images_decode_past_its_pixel_budget_is_refused_before_any_decode(vision, monkeypatch) -> None:
    from PIL import ImageFile

    handler, context = vision  # max_pixels 1,000,000 per image, so per request; 2,000,000 per batch
    decoded: set[int] = set()  # the images whose pixels were decoded (load() runs again on each later use)
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.add(id(self)) or real_load(self))
    image = lossless_webp(900)  # 810,000 pixels: under the per-image cap
    import base64

    two = js({"data": [base64.b64encode(image).decode()] * 2})
    answers = run_handler_wire(handler, context, [body_request(two, JSON)])
    assert answers[0][0] == 413 and "decode to 1,620,000 pixels" in message(answers[0][1])
    assert not decoded  # refused on the headers alone
    answers = run_handler_wire(handler, context, [body_request(image, "image/webp")] * 3)
    assert sorted(status for status, _, _ in answers) == [200, 200, 429]
    assert len(decoded) == 2
    busy = next(body for status, body, _ in answers if status == 429)
    assert "retry" in message(busy)


def test_metadata_floods_are_refused_before_pillow_walks_them(vision) -> None:
    handler, context = vision
    jpeg = encode(np.zeros((8, 8, 3), np.uint8))
    comment = b"\xff\xfe\x00\x02"  # an empty COM segment
    flooded_jpeg = jpeg[:2] + comment * 100_000 + jpeg[2:]
    started = time.perf_counter()
    answers = run_handler_wire(handler, context, [body_request(png_with_chunks(400_000), "image/png"),
                                                  body_request(flooded_jpeg, "image/jpeg"),
                                                  body_request(encode(sample_photos()[0]), "image/jpeg")])
    assert time.perf_counter() - started < 5  # Pillow spent 2 s on the PNG alone
    assert [status for status, _, _ in answers] == [413, 413, 200]
    assert "PNG chunks" in message(answers[0][1]) and "JPEG segments" in message(answers[1][1])


# --- 3. no exception escapes one request -----------------------------------------------------------

@pytest.mark.parametrize(("body", "fragment"), [
    (b"\x93NUMPY\x02\x00\x00\x00", "truncated"),
    (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"), "damaged or truncated"),
    (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000000000000,), }"), "digits"),
    (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 5000 + ",), }"), "digits"),
    (npy_raw("{'descr': '|S0', 'fortran_order': False, 'shape': (8,), }"), "has no size"),
    (npy_raw("{'descr': '<U0', 'fortran_order': False, 'shape': (8,), }"), "has no size"),
    (npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 99999999, 99999999, 99999999), }"), "cannot be built"),
], ids=["v2 header, nothing after", "2^32 x 2^32", "10**20", "5000 digits", "|S0", "<U0", "zero-size overflow"])
def test_hostile_npy_headers_are_each_a_400(mlp, body: bytes, fragment: str) -> None:
    [(status, answer, _)] = with_good(mlp, body_request(body, NPY))
    assert status == 400 and fragment in message(answer)


@pytest.mark.parametrize(("tensor", "fragment"), [
    ({"datatype": ["FP32"]}, "datatype ['FP32'] is not supported"),
    ({"datatype": {"a": 1}}, "is not supported"),
    ({"shape": [10 ** 30]}, "holds more than"),
    ({"shape": [2 ** 62, 2 ** 62]}, "holds more than"),
    ({"datatype": "INT8", "data": [1000] * 64}, "outside INT8"),
], ids=["datatype list", "datatype dict", "shape 10**30", "shape 2^124", "INT8 1000"])
def test_hostile_v2_tensors_are_each_a_400(mlp, tensor: dict, fragment: str) -> None:
    base = {"name": mlp[2].contract.name, "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}
    [(status, answer, _)] = with_good(mlp, body_request(js({"inputs": [{**base, **tensor}]}), JSON))
    assert status == 400 and fragment in message(answer)


def test_a_decoder_that_raises_anything_answers_that_request_400_and_logs_it(mlp, monkeypatch, caplog) -> None:
    import handlers.bodies.decode as decode

    real = decode.decode_arrays

    def broken(payload, content_type, names):
        if isinstance(payload, (bytes, bytearray)) and payload.startswith(b"\x93NUMPY"):
            raise KeyError("a decoder bug")
        return real(payload, content_type, names)

    monkeypatch.setattr(decode, "decode_arrays", broken)
    [(status, answer, _)] = with_good(mlp, body_request(io_npy(mlp[2].x_test[:1]), NPY))
    assert status == 400 and "KeyError" in message(answer)
    assert any("decoding its body raised KeyError" in r.message and r.exc_info for r in caplog.records)


def test_one_text_the_tokenizer_refuses_never_fails_its_batch(bert_build) -> None:
    handler, context = loaded(bert_build.build_dir / "bert")
    texts = bert_build.task.test_texts[:3]
    answers = run_handler_wire(handler, context, [
        body_request(js({"text": texts[0]}), JSON),
        body_request(b'{"text": ["rain", "\\ud800 snow"]}', JSON),  # a lone surrogate: not text
        body_request(js({"text": texts[1:3]}), JSON),
    ])
    assert [status for status, _, _ in answers] == [200, 400, 200]
    assert "lone UTF-16 surrogate" in message(answers[1][1])
    alone = run_handler_wire(handler, context, [body_request(js({"text": texts[1:3]}), JSON)])
    assert answers[2][1] == alone[0][1]


def test_a_tokenizer_failing_on_the_batch_is_retried_request_by_request(bert_build) -> None:
    handler, context = loaded(bert_build.build_dir / "bert")
    real = handler.pipeline.text_encoder.tokenizer

    class Picky:  # refuses any batch that holds the word "poison", like the Rust binding on a bad string
        def encode_batch(self, texts):
            if any("poison" in t for t in texts):
                raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
            return real.encode_batch(texts)

    handler.pipeline.text_encoder.tokenizer = Picky()
    answers = run_handler_wire(handler, context, [body_request(js({"text": "the match"}), JSON),
                                                  body_request(js({"text": "poison rain"}), JSON)])
    assert [status for status, _, _ in answers] == [200, 400]
    assert "tokenizer refused this text (TypeError" in message(answers[1][1])


@pytest.mark.parametrize("kind", sorted(DAMAGED_EXIF))
def test_a_jpeg_with_damaged_exif_is_a_400_naming_the_exif(vision, kind: str) -> None:
    handler, context = vision
    data = jpeg_with_exif(bytes.fromhex(DAMAGED_EXIF[kind]))
    answers = run_handler_wire(handler, context, [body_request(data, "image/jpeg"),
                                                  body_request(encode(sample_photos()[1]), "image/jpeg")])
    assert [status for status, _, _ in answers] == [400, 200]
    assert "damaged EXIF metadata" in message(answers[0][1])


# --- 4. correct answers or a 4xx ------------------------------------------------------------------

@pytest.mark.parametrize("field", ["file", "data"])  # "data" is also what a JSON body's key is called
def test_repeated_multipart_names_are_each_answered_in_order(vision, image_model, field: str) -> None:
    handler, context = vision
    photos = sample_photos()
    images = [encode(np.ascontiguousarray(photos[0][:200, :300])), encode(np.ascontiguousarray(photos[1][100:400])),
              encode(np.ascontiguousarray(photos[0][50:, 200:]), "PNG")]
    form = [(field, images[0], "image/jpeg"), (field, images[1], "image/jpeg"), (field, images[2], "image/png")]
    answers = run_handler_wire(handler, context, [(form, {}), body_request(images[1], "image/jpeg")])
    assert [status for status, _, _ in answers] == [200, 200]
    served = [p["top_k"][0]["probability"] for p in json.loads(answers[0][1])["predictions"]]
    config = yaml.safe_load((image_model / "model-config.yaml").read_text())
    from handlers.config import HandlerConfig
    from support.image_models import tiny_vision

    prep = HandlerConfig.from_model_yaml(config).signature.images["image"]
    with torch.inference_mode():
        expected = torch.softmax(tiny_vision()(torch.from_numpy(preprocess(images, prep))), 1).max(1).values.numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


@pytest.fixture(scope="module")
def unbounded(tmp_path_factory):
    """A classifier and a regressor whose inputs declare no range: huge values make their outputs infinite."""
    root = tmp_path_factory.mktemp("unbounded")
    torch.manual_seed(0)
    models = {}
    for name, outputs, task in (("free_classifier", 3, {}), ("free_regressor", 1, {"task": "regression"})):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, outputs)).eval()
        with torch.no_grad():
            model[0].weight.fill_(2.0)  # 4 x 2 x 3.4e38 overflows float32: infinite hidden units
        build = ModelBuild(name, Signature((InputSpec("x", (4,)),)), (), Batching(), formats=("onnx",), task=task)
        build_model_dir(model, build, np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32), root / name)
        models[name] = root / name
    return models


@pytest.mark.parametrize("name", ["free_classifier", "free_regressor"])
def test_non_finite_outputs_are_a_500_for_their_request_never_json_nan(unbounded, name: str) -> None:
    handler, context = loaded(unbounded[name])
    huge = [[3.4e38] * 4, [3.0e38, 3.0e38, 3.0e38, -1.0]]
    requests = [body_request(js({"data": [row]}), JSON) for row in huge]
    requests.append(body_request(js({"data": [[0.1, 0.2, 0.3, 0.4]]}), JSON))
    answers = run_handler_wire(handler, context, requests)
    assert [status for status, _, _ in answers][-1] == 200
    bad = [(status, body) for status, body, _ in answers[:-1] if status != 200]
    assert bad, "no huge input made an output infinite: the test no longer tests anything"
    for status, body in bad:
        assert status == 500 and "NaN or Infinity" in message(body) and "--min/--max" in message(body)
    for status, body, _ in answers:  # every answer, good or bad, is JSON
        json.loads(body, parse_constant=lambda constant: pytest.fail(f"{constant} in {body[:100]!r}"))


def test_a_jpeg_whose_header_declares_more_rows_than_its_data_is_refused(vision) -> None:
    handler, context = vision
    answers = run_handler_wire(handler, context, [body_request(jpeg_declaring_more_rows(factor),
                                                               "image/jpeg") for factor in (2, 30)]
                               + [body_request(encode(sample_photos()[0]), "image/jpeg")])
    assert [status for status, _, _ in answers] == [400, 400, 200]
    assert all("scan data ends before" in message(body) for _, body, _ in answers[:2])


@pytest.mark.parametrize("body", [{"text": ""}, {"text": ["rain", ""]}, {"text": "   "}])
def test_empty_texts_are_refused(bert_build, body: dict) -> None:
    handler, context = loaded(bert_build.build_dir / "bert")
    [(status, answer, _)] = run_handler_wire(handler, context, [body_request(js(body), JSON)])
    assert status == 400 and "is empty" in message(answer)


@pytest.mark.parametrize("name", ["../../x", "a b", "", "-x", "x/y"])
def test_a_model_registered_under_an_unroutable_name_does_not_load(built_models, name: str) -> None:
    from handlers.errors import ConfigError

    context = make_context(built_models["digits_mlp"].directory, "model.onnx")
    context.model_name = name
    with pytest.raises(ConfigError, match="must match"):
        InferenceHandler().initialize(context)


# --- 5. messages ------------------------------------------------------------------------------------

def test_image_messages_name_the_problem_not_memory_addresses(vision) -> None:
    from servekit.measure.bad_inputs import png_declaring

    handler, context = vision
    svg = b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg' width='9' height='9'/>"
    answers = run_handler_wire(handler, context, [body_request(png_declaring(0, 0), "image/png"),
                                                  body_request(svg, "application/octet-stream"),
                                                  body_request(b"<svg></svg>", "image/svg+xml")])
    assert [status for status, _, _ in answers] == [400, 415, 415]
    assert "0x" not in message(answers[0][1]) and "object at" not in message(answers[0][1])
    assert "is SVG" in message(answers[1][1]) and "octet-stream" not in message(answers[1][1])


# --- the bad-input matrix of `make reliability`, in-process first ------------------------------------

def run_cases(handler, context, cases, good) -> list[str]:
    """Each case beside the good request; the cases whose answer is not the one the matrix expects."""
    [(_, alone, _)] = run_handler_wire(handler, context, [good])
    wrong = []
    for case in cases:
        answers = run_handler_wire(handler, context, [body_request(case.body, case.content_type, case.headers), good])
        (status, body, _), (good_status, good_body, _) = answers
        said = message(body) if status != 200 else ""
        if status != case.status or case.message not in said or (good_status, good_body) != (200, alone):
            wrong.append(f"{case.name}: {status} {said[:150]!r} (good mate {good_status})")
    return wrong


def test_the_tensor_matrix_holds_in_process(mlp) -> None:
    from servekit.measure.bad_inputs import bad_inputs

    handler, context, built, good, _ = mlp
    cases = [c for c in bad_inputs(built.contract.shape, 64, 6291456, built.contract.name)
             if c.name != "body over max_request_size"]  # the frontend's own 413: never reaches a worker
    assert len(cases) >= 45
    wrong = run_cases(handler, context, cases, good)
    assert not wrong, "\n".join(wrong)


def test_the_image_matrix_holds_in_process(vision) -> None:
    from servekit.measure.bad_inputs import bad_images
    from support.image_models import MAX_PIXELS

    handler, context = vision
    wrong = run_cases(handler, context, bad_images(MAX_PIXELS, "image"),
                      body_request(encode(sample_photos()[1]), "image/jpeg"))
    assert not wrong, "\n".join(wrong)


def test_the_text_matrix_holds_in_process(bert_build) -> None:
    from servekit.measure.bad_inputs import bad_texts

    handler, context = loaded(bert_build.build_dir / "bert")
    wrong = run_cases(handler, context, bad_texts(), body_request(js({"text": "the match and the goal"}), JSON))
    assert not wrong, "\n".join(wrong)
