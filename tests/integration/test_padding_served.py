"""Padding must never change an answer: an audio model without a mask fails the export's padding check,
says so, and is then served in sub-batches of equal length, so a short waveform sharing a TorchServe
batch with a long one answers exactly as it does alone. A masked text model passes the check."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from handlers.handler import InferenceHandler
from servekit.cli import main
from servekit.build.user_model import load_user_model
from support.serving import LiveServer, batch_counters, mean_batch_size, run_archive_sh, send_together
from support.torchserve_context import make_context, run_handler_raw

pytestmark = pytest.mark.integration
WAVE_INPUT = "waveform:float32:1600..16000"
LENGTHS = (4000, 11000, 1600, 16000, 4000, 7000)


@pytest.fixture(scope="module")
def wave_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_dir = tmp_path_factory.mktemp("wave")
    assert main(["export", "--factory", "support.user_models:unmasked_wave", "--name", "wave", "--task",
                 "classification", "--input", WAVE_INPUT, "--formats", "onnx", "--random-weights",
                 "--build-dir", str(build_dir)]) == 0
    return build_dir / "wave"


def waveforms() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal(n).astype(np.float32) for n in LENGTHS]


def alone(wave: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        model = load_user_model("support.user_models:unmasked_wave", random_weights=True)
        return torch.softmax(model(torch.from_numpy(wave[None])), 1)[0].numpy()


def top(prediction: dict) -> float:
    """The answer's probability of its class (rounded to 6 decimals, as served)."""
    return prediction["top_k"][0]["probability"]


def test_the_export_records_that_padding_changes_this_model(wave_dir: Path, capsys: pytest.CaptureFixture) -> None:
    handler = yaml.safe_load((wave_dir / "model-config.yaml").read_text())["handler"]
    assert handler["padding_invariant"] is False
    validation = json.loads((wave_dir / "validation.json").read_text())
    assert validation["padding"]["invariant"] is False and validation["padding"]["max_abs_diff"] > 1e-4


def test_equal_length_sub_batches_keep_each_answer_as_alone_and_padding_would_not(wave_dir: Path) -> None:
    """In-process through the handler: with the recorded setting every answer equals the one alone; the same
    batch padded together (the setting flipped) gives a different answer, so the check guards something."""
    bodies = [(json.dumps({"data": wave.tolist()}).encode(), "application/json") for wave in waveforms()]
    expected = [alone(wave) for wave in waveforms()]
    answers = {}
    for invariant in (False, True):
        context = make_context(wave_dir, "model.onnx")
        context.model_yaml_config["handler"]["padding_invariant"] = invariant
        context.model_yaml_config["handler"]["min_padding_efficiency"] = 0.1  # flipped: all in one padded batch
        handler = InferenceHandler()
        handler.initialize(context)
        answers[invariant] = [json.loads(body)["predictions"][0] for _, body, _ in run_handler_raw(handler, context, bodies)]
    for answer, probabilities in zip(answers[False], expected):
        assert answer["class"] == int(probabilities.argmax())
        assert top(answer) == pytest.approx(float(probabilities.max()), abs=1e-5)
    assert any(abs(top(a) - float(p.max())) > 1e-4 for a, p in zip(answers[True], expected))


def test_served_short_and_long_waveforms_in_one_batch_answer_as_alone(live: LiveServer, model_store: Path,
                                                                      wave_dir: Path) -> None:
    result = run_archive_sh(model_store, wave_dir)
    assert result.returncode == 0, result.stderr
    live.client.register("wave_onnx.mar", batch_size=16, max_batch_delay_ms=200)
    try:
        bodies = [(json.dumps({"data": wave.tolist()}).encode(), "application/json") for wave in waveforms()]
        before = batch_counters(live.client, "wave_onnx")
        responses = send_together(live.client, "wave_onnx", bodies)
        shared = mean_batch_size(live.client, "wave_onnx", before, len(bodies))
    finally:
        live.client.unregister("wave_onnx")
    assert [r.status_code for r in responses] == [200] * len(LENGTHS)
    assert shared > 1  # they did share TorchServe batches
    for response, wave in zip(responses, waveforms()):
        probabilities = alone(wave)
        prediction = response.json()["predictions"][0]
        assert prediction["class"] == int(probabilities.argmax())
        assert top(prediction) == pytest.approx(float(probabilities.max()), abs=1e-5)
