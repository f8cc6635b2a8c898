"""Composition config, the in-process composed model (deadline, failing member) and the workflow nodes."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from handlers.composed_model import ComposedModel
from handlers.encode import encode_npy
from handlers.composition import (CompositionConfig, MemberSpec, as_logits, member_probabilities,
                                  weighted_mean)
from handlers.config import HandlerConfig, InputContract
from handlers.errors import ConfigError
from handlers.bodies.npy import decode_npy
from handlers.encode import softmax
from handlers.errors import MemberFailed, MemberTimedOut
from handlers.bodies.request import RequestInput
from handlers.pipeline import InferencePipeline

CONTRACT = InputContract("image", (8, 8), "float32", 0.0, 255.0)


class FixedBackend:
    """Returns fixed logits per row; optionally sleeps or raises, like a misbehaving member."""

    def __init__(self, logits: list[float], sleep_s: float = 0.0, error: Exception | None = None) -> None:
        self.logits, self.sleep_s, self.error = np.array(logits, dtype=np.float32), sleep_s, error
        self.seen: list[np.ndarray] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.seen.append(batch)
        time.sleep(self.sleep_s)
        if self.error is not None:
            raise self.error
        return np.tile(self.logits, (batch.shape[0], 1))

    def run_named(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = inputs.values()
        return [self.run(batch)]

    def describe(self) -> str:
        return "fixed"


def composition(weights: dict[str, float], timeout_ms: int = 1000, scale: float = 0.5) -> CompositionConfig:
    return CompositionConfig(tuple(MemberSpec(name, f"members/{name}.onnx", w) for name, w in weights.items()),
                             scale=scale, member_timeout_ms=timeout_ms)


def test_config_round_trips_and_rejects_what_cannot_work() -> None:
    config = composition({"a": 1.0, "b": 3.0})
    assert CompositionConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unique"):
        CompositionConfig((MemberSpec("a", "x"), MemberSpec("a", "y")))
    with pytest.raises(ConfigError, match="weight must be > 0"):
        MemberSpec("a", "x.onnx", 0.0)
    with pytest.raises(ConfigError, match="at least one member"):
        CompositionConfig(())
    with pytest.raises(ConfigError, match="needs name and file"):
        CompositionConfig.from_dict({"members": [{"name": "a"}]})


def test_weighted_mean_follows_the_weights_and_logits_give_back_the_mean() -> None:
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    mean = weighted_mean({"a": a, "b": b}, {"a": 1.0, "b": 3.0})
    np.testing.assert_allclose(mean, [[0.25, 0.75]])
    np.testing.assert_allclose(softmax(as_logits(mean)), mean, rtol=1e-12)


def test_composed_model_scales_input_and_averages_member_probabilities() -> None:
    a, b = FixedBackend([2.0, 0.0, 0.0]), FixedBackend([0.0, 0.0, 4.0])
    model = ComposedModel(composition({"a": 1.0, "b": 1.0}, scale=0.5), {"a": a, "b": b})
    batch = np.full((2, 8, 8), 10.0, dtype=np.float32)
    probabilities = softmax(model.run(batch))
    expected = (member_probabilities(a.logits[None]) + member_probabilities(b.logits[None])) / 2
    np.testing.assert_allclose(probabilities, np.repeat(expected, 2, axis=0), rtol=1e-6)
    assert a.seen[0].dtype == np.float32 and float(a.seen[0].max()) == 5.0  # scaled once, before the members


def test_a_member_past_its_deadline_is_answered_with_504_without_waiting_for_it() -> None:
    slow = FixedBackend([0.0, 1.0], sleep_s=2.0)
    model = ComposedModel(composition({"fast": 1.0, "slow": 1.0}, timeout_ms=200),
                          {"fast": FixedBackend([1.0, 0.0]), "slow": slow})
    started = time.monotonic()
    with pytest.raises(MemberTimedOut, match="'slow' did not answer within 200 ms") as caught:
        model.run(np.zeros((1, 8, 8), dtype=np.float32))
    assert time.monotonic() - started < 1.0
    assert caught.value.status == 504


def test_a_raising_or_misshapen_member_is_a_500_naming_it() -> None:
    raising = ComposedModel(composition({"ok": 1.0, "bad": 1.0}),
                            {"ok": FixedBackend([1.0, 0.0]), "bad": FixedBackend([1.0, 0.0], error=RuntimeError("boom"))})
    with pytest.raises(MemberFailed, match="'bad' failed: RuntimeError: boom"):
        raising.run(np.zeros((1, 8, 8), dtype=np.float32))
    misshapen = ComposedModel(composition({"ok": 1.0, "seven": 1.0}),
                              {"ok": FixedBackend([1.0, 0.0, 0.0]), "seven": FixedBackend([0.0] * 7)})
    with pytest.raises(MemberFailed, match=r"'seven' returned shape \[1, 7\]; expected \[1, 3\]"):
        misshapen.run(np.zeros((1, 8, 8), dtype=np.float32))


def test_member_failure_answers_the_accepted_requests_and_bad_ones_keep_their_4xx() -> None:
    model = ComposedModel(composition({"slow": 1.0}, timeout_ms=100), {"slow": FixedBackend([0.0, 1.0], sleep_s=1.0)})
    pipeline = InferencePipeline(HandlerConfig(CONTRACT), model)
    good = RequestInput({"data": np.zeros((8, 8)).tolist()}, "application/json")
    bad = RequestInput({"data": [1, 2]}, "application/json")
    answers, _ = pipeline.run([good, bad, good])
    assert [a.status for a in answers] == [504, 422, 504]
    assert json.loads(answers[0].body)["error"]["type"] == "MemberTimedOut"


def test_probabilities_output_is_float32_npy_per_request() -> None:
    config = HandlerConfig(CONTRACT, output="probabilities")
    pipeline = InferencePipeline(config, FixedBackend([0.0, 2.0]))
    answers, _ = pipeline.run([RequestInput(encode_npy(np.zeros((3, 8, 8), np.float32)), "application/x-npy")])
    array = decode_npy(answers[0].body)
    assert answers[0].content_type == "application/x-npy" and array.dtype == np.float32 and array.shape == (3, 2)
    np.testing.assert_allclose(array, member_probabilities(np.array([[0.0, 2.0]] * 3)))
    with pytest.raises(ConfigError, match="handler.output"):
        HandlerConfig(CONTRACT, output="logits")
