"""Checkpoints exported with --transformers in a real TorchServe: NER, extractive QA, an image and an audio
classifier answer concurrent requests (sharing batches) exactly as they answer in-process (the eager model on
the handler's own preprocessing, or the handler in-process for token and span answers), and each new body kind's
bad inputs get their own 4xx while batch-mates get 200."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from handlers.handler import InferenceHandler
from servekit.build.checkpoint.derive import CheckpointOptions, derive
from servekit.build.images import photo_crops
from servekit.examples.zoo import tone, wav_bytes
from servekit.measure.bad_inputs import bad_audio, bad_questions, bad_texts
from servekit.measure.reliability import run_matrix
from support.serving import (BATCH_SIZE, MAX_BATCH_DELAY_MS, LiveServer, batch_counters, call_together, mean_batch_size,
                             run_archive_sh)
from support.torchserve_context import make_context, run_handler_raw

pytestmark = pytest.mark.integration
JSON = "application/json"
TOLERANCE = 1e-4
ARCHIVES = {"bert-ner": "bert-ner_onnx", "bert-qa": "bert-qa_onnx", "vit": "vit_ts", "wav2vec2": "wav2vec2_ts"}
ARTIFACT = {"onnx": "model.onnx", "ts": "model.pt"}


@pytest.fixture(scope="module")
def served(live: LiveServer, model_store: Path, checkpoints):
    result = run_archive_sh(model_store, *(checkpoints[name].directory for name in ARCHIVES))
    assert result.returncode == 0, result.stderr
    for archive in ARCHIVES.values():
        live.client.register(f"{archive}.mar", batch_size=BATCH_SIZE, max_batch_delay_ms=MAX_BATCH_DELAY_MS)
    yield live.client
    for archive in ARCHIVES.values():
        live.client.unregister(archive)



def in_process_handler(checkpoints, name: str) -> tuple[InferenceHandler, object]:
    archive = ARCHIVES[name]
    context = make_context(checkpoints[name].directory, ARTIFACT[archive.rsplit("_", 1)[1]])
    handler = InferenceHandler()
    handler.initialize(context)
    return handler, context


def same_json(served: object, expected: object) -> None:
    """Equal structures; numbers within TOLERANCE (scores), everything else exactly (labels, words, offsets)."""
    if isinstance(expected, dict):
        assert isinstance(served, dict) and served.keys() == expected.keys(), (served, expected)
        for key in expected:
            same_json(served[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(served, list) and len(served) == len(expected), (served, expected)
        for a, b in zip(served, expected):
            same_json(a, b)
    elif isinstance(expected, float):
        assert served == pytest.approx(expected, abs=TOLERANCE)
    else:
        assert served == expected


def test_served_token_and_span_answers_equal_in_process(served, checkpoints) -> None:
    client = served
    auth = client._auth("inference")
    texts = ["john smith works in paris for acme corp", "mary jones", "the new york globex and " * 20]
    pairs = [{"question": "who works in paris ?", "context": "john smith works in paris ."},
             {"question": "who ?", "context": " ".join(["the goal of the team and the coach"] * 40)}]
    bodies = {"bert-ner": [json.dumps({"text": t}).encode() for t in texts] + [json.dumps({"text": texts[:2]}).encode()],
              "bert-qa": [json.dumps(p).encode() for p in pairs] + [json.dumps({"inputs": pairs}).encode()]}
    calls, keys = [], []
    for name, items in bodies.items():
        url = f"{client.inference_url}/predictions/{ARCHIVES[name]}"
        for body in items:
            calls.append(lambda url=url, body=body: client.session.post(
                url, data=body, headers={**auth, "Content-Type": JSON}, timeout=120))
            keys.append((name, body))
    responses = call_together(calls)
    assert [r.status_code for r in responses] == [200] * len(calls), [r.text[:200] for r in responses]
    handlers = {name: in_process_handler(checkpoints, name) for name in bodies}
    for (name, body), response in zip(keys, responses):
        handler, context = handlers[name]
        [(status, expected, _)] = run_handler_raw(handler, context, [(body, JSON)])
        assert status == 200
        same_json(response.json(), json.loads(expected))


def eager_probabilities(checkpoints, name: str, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    wrapper = derive(checkpoints[name].folder, CheckpointOptions(max_seconds=1.0)).wrapper
    with torch.inference_mode():
        return torch.softmax(wrapper(*inputs), dim=-1).numpy()


def test_served_images_and_audio_equal_the_eager_model(served, checkpoints) -> None:
    client = served
    auth = client._auth("inference")
    images = photo_crops(4, seed=3)
    clips = [wav_bytes(tone(s, hz)) for s, hz in ((0.2, 220), (0.9, 440), (0.5, 880))]
    calls = [lambda data=data: client.session.post(f"{client.inference_url}/predictions/{ARCHIVES['vit']}", data=data,
                                                   headers={**auth, "Content-Type": "image/jpeg"}, timeout=120)
             for data in images]
    calls += [lambda data=data: client.session.post(f"{client.inference_url}/predictions/{ARCHIVES['wav2vec2']}",
                                                    data=data, headers={**auth, "Content-Type": "audio/wav"}, timeout=120)
              for data in clips]
    models = (ARCHIVES["vit"], ARCHIVES["wav2vec2"])
    before = {model: batch_counters(client, model) for model in models}
    responses = call_together(calls)
    assert [r.status_code for r in responses] == [200] * len(calls), [r.text[:200] for r in responses]
    shared = [mean_batch_size(client, model, before[model], count)
              for model, count in zip(models, (len(images), len(clips)))]
    vit_handler, _ = in_process_handler(checkpoints, "vit")
    (_, image) = next(iter(vit_handler.pipeline.signature.images.items()))
    audio_handler, _ = in_process_handler(checkpoints, "wav2vec2")
    (_, audio) = next(iter(audio_handler.pipeline.signature.audio.items()))
    expected = [eager_probabilities(checkpoints, "vit", (torch.from_numpy(image.to_model([image.decode_many([d])]).copy()),))[0]
                for d in images]
    for clip in clips:
        samples = audio.decode(clip)
        expected.append(eager_probabilities(checkpoints, "wav2vec2", (torch.from_numpy(samples[None]),
                                                                      torch.ones(1, len(samples), dtype=torch.long)))[0])
    for response, probabilities in zip(responses, expected):
        [row] = response.json()["predictions"]
        assert row["class"] == int(probabilities.argmax())
        for entry in row["top_k"]:
            assert entry["probability"] == pytest.approx(float(probabilities[entry["class"]]), abs=TOLERANCE)
    assert max(shared) > 1  # requests shared TorchServe batches


@pytest.mark.parametrize("name", ["wav2vec2", "bert-qa", "bert-ner"])
def test_bad_bodies_of_each_new_kind_in_shared_batches(served, checkpoints, name: str) -> None:
    good = {"wav2vec2": (wav_bytes(tone(0.3)), "audio/wav"),
            "bert-qa": (json.dumps({"question": "who ?", "context": "john works"}).encode(), JSON),
            "bert-ner": (json.dumps({"text": "john works in paris"}).encode(), JSON)}[name]
    cases = {"wav2vec2": lambda: bad_audio("input_values", 1.0, 64), "bert-qa": lambda: bad_questions(64),
             "bert-ner": lambda: bad_texts(64, ("input_ids", "attention_mask", "token_type_ids"))}[name]()
    outcomes, good_failures = run_matrix(served, ARCHIVES[name], (), cases, BATCH_SIZE, good_request=good)
    failed = [(o.case, o.expected_status, o.status, o.message[:160]) for o in outcomes if not o.passed]
    assert not failed, failed
    assert good_failures == 0
    assert served.ping()
