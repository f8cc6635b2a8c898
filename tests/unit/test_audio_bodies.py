"""An audio classifier exported with --transformers, driven through the handler as a worker runs it: WAV bodies in
every way they come (raw, base64 JSON, v2 BYTES in JSON and binary, multipart, raw samples), answers equal to the
eager model on the same samples, a clip's answer the same alone and padded in a batch, and every bad body a 4xx
of its own while its batch-mates get 200."""
from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
import torch

from handlers.bodies.open_inference import HEADER_LENGTH
from handlers.handler import InferenceHandler
from handlers.sub_batches import SubBatchPolicy
from support.torchserve_context import make_context, model_calls, run_handler_raw
from servekit.examples.zoo import tone, wav_bytes
from servekit.measure.bad_inputs import bad_audio

JSON = "application/json"
TOLERANCE = 1e-4
MAX_ERROR_BYTES = 1024  # an error answer never grows with the client text it names


@pytest.fixture(scope="module")
def audio(checkpoints):
    built = checkpoints["wav2vec2"]
    context = make_context(built.directory, "model.onnx")
    handler = InferenceHandler()
    handler.initialize(context)
    return built, handler, context


def eager_logits(built, samples: np.ndarray) -> np.ndarray:
    """The exported wrapper's eager twin on one clip (normalisation and all), from the folder itself."""
    from servekit.build.checkpoint.derive import CheckpointOptions, derive

    wrapper = derive(built.folder, CheckpointOptions(max_seconds=1.0)).wrapper
    with torch.inference_mode():
        return wrapper(torch.from_numpy(samples[None]), torch.ones(1, len(samples), dtype=torch.long)).numpy()[0]


def probabilities(answer) -> np.ndarray:
    """Each row's top-k probabilities placed at their classes (NaN elsewhere)."""
    status, body, _ = answer
    assert status == 200, body
    rows = json.loads(body)["predictions"]
    out = np.full((len(rows), 5), np.nan)
    for row, prediction in zip(out, rows):
        for entry in prediction["top_k"]:
            row[entry["class"]] = entry["probability"]
    return out


def assert_close(row: np.ndarray, expected: np.ndarray, atol: float = TOLERANCE) -> None:
    known = ~np.isnan(row)
    assert known.sum() == 3
    np.testing.assert_allclose(row[known], expected[known], atol=atol)


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def test_every_body_kind_answers_like_the_eager_model(audio) -> None:
    built, handler, context = audio
    clip = tone(0.5, 330) + 0.05 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    data = wav_bytes(clip)
    decoded = handler.pipeline.signature.audio["input_values"].decode(data)
    expected = softmax(eager_logits(built, decoded))
    b64 = base64.b64encode(data).decode()
    header = json.dumps({"inputs": [{"name": "input_values", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 4 + len(data)}}]}).encode()
    answers = run_handler_raw(handler, context, [
        (data, "audio/wav"),
        (data, "application/octet-stream"),
        (json.dumps({"audio": b64}).encode(), JSON),
        (json.dumps({"data": [b64, b64]}).encode(), JSON),
        (json.dumps({"inputs": [{"name": "input_values", "shape": [1], "datatype": "BYTES", "data": [b64]}]}).encode(), JSON),
        (header + struct.pack("<I", len(data)) + data, "application/octet-stream", {HEADER_LENGTH: str(len(header))}),
        (json.dumps({"data": decoded.tolist()}).encode(), JSON),  # raw samples at the model's rate
    ])
    for idx, answer in enumerate(answers):
        if idx in (4, 5):  # v2: probabilities tensor
            status, body, _ = answer
            assert status == 200, body
            if idx == 4:
                outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
                np.testing.assert_allclose(outputs["probabilities"]["data"], expected, atol=TOLERANCE)
            continue
        for row in probabilities(answer):
            assert_close(row, expected)


def test_a_clip_answers_the_same_alone_and_padded_in_a_batch(audio) -> None:
    _, handler, context = audio
    # a DC offset: the mean each clip is normalised by must be its own (the tiny model's layer norm ignores scale)
    short, long_ = wav_bytes(tone(0.2, 440) + 0.3), wav_bytes(tone(0.9, 880, amplitude=0.2) - 0.4)
    alone = probabilities(run_handler_raw(handler, context, [(short, "audio/wav")])[0])
    policy = handler.pipeline.sub_batch_policy
    handler.pipeline.sub_batch_policy = SubBatchPolicy(min_efficiency=0.0)  # both clips in one padded batch
    try:
        with model_calls(handler) as calls:
            batched = run_handler_raw(handler, context, [(short, "audio/wav"), (long_, "audio/wav")])
    finally:
        handler.pipeline.sub_batch_policy = policy
    np.testing.assert_allclose(probabilities(batched[0]), alone, atol=1e-5)  # NaN where not in the top k: equal too
    assert calls == [2]


def test_other_rates_and_stereo_are_resampled_and_mixed(audio) -> None:
    built, handler, context = audio
    stereo_44k = np.stack([tone(0.5, 440, rate=44_100), tone(0.5, 440, rate=44_100)], 1).reshape(-1)
    answer = run_handler_raw(handler, context, [(wav_bytes(stereo_44k, 44_100, channels=2), "audio/wav")])[0]
    expected = softmax(eager_logits(built, handler.pipeline.signature.audio["input_values"].decode(
        wav_bytes(stereo_44k, 44_100, channels=2))))
    assert_close(probabilities(answer)[0], expected)
    mono_16k = probabilities(run_handler_raw(handler, context, [(wav_bytes(tone(0.5, 440)), "audio/wav")])[0])[0]
    assert_close(probabilities(answer)[0], mono_16k, atol=0.02)  # the same tone, resampled


def test_bad_audio_bodies_get_their_own_4xx_and_batch_mates_200(audio) -> None:
    _, handler, context = audio
    cases = bad_audio("input_values", 1.0, 64)
    good = (wav_bytes(tone(0.3)), "audio/wav")
    answers = run_handler_raw(handler, context, [body for case in cases for body in ((case.body, case.content_type), good)])
    for case, bad, mate in zip(cases, answers[0::2], answers[1::2]):
        assert bad[0] == case.status, (case.name, bad[1])
        error = json.loads(bad[1])["error"]
        assert case.message in (error["message"] if isinstance(error, dict) else error), (case.name, error)
        assert len(bad[1]) < MAX_ERROR_BYTES, (case.name, len(bad[1]))
        assert mate[0] == 200
