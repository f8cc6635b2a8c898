"""The thread policy: a model's share of a request's CPU time decides its threads; explicit threads win."""
from __future__ import annotations

import numpy as np
import pytest

from handlers.config import HandlerConfig
from handlers.signature import InputSpec, Signature
from handlers.thread_policy import (FRONTEND_MS_PER_REQUEST, choose_threads, load_on_fitting_threads, probe_batch,
                                    time_per_instance)


@pytest.mark.parametrize("model_ms, cores, workers, threads", [
    (30.0, 2, 1, 2),      # a ResNet-18 image: compute-bound, gets both cores
    (2.5, 2, 1, 2),       # a 4-layer BERT sentence
    (0.003, 2, 1, 1),     # the 64-input MLP: frontend-bound, leaves a core
    (0.003, 8, 1, 1),
    (0.25, 8, 1, 4),      # half the work: half the cores
    (30.0, 8, 3, 2),      # workers share the model's cores
    (30.0, 2, 4, 1),      # never below one thread
])
def test_threads_follow_the_models_share_of_the_work(model_ms: float, cores: int, workers: int, threads: int) -> None:
    choice = choose_threads(model_ms, cores, workers)
    assert choice.threads == threads
    assert f"{choice.threads} intra-op thread(s) x {workers} worker(s) on {cores} core(s)" in choice.reason
    assert ("compute-bound" in choice.reason) == (min(cores, round(cores * model_ms / (model_ms + FRONTEND_MS_PER_REQUEST))) == cores)


def test_probe_batch_fits_the_signature() -> None:
    signature = Signature((InputSpec("input_ids", ("1..128",), "int64", 0, 999),
                           InputSpec("attention_mask", ("1..128",), "int64", 0, 1)))
    batch = probe_batch(signature, rows=4)
    assert {name: (a.shape, a.dtype) for name, a in batch.items()} == {
        "input_ids": ((4, 32), np.int64), "attention_mask": ((4, 32), np.int64)}
    short = probe_batch(Signature((InputSpec("x", ("2..8", 3), "float32", 1.0, 2.0),)), rows=2)["x"]
    assert short.shape == (2, 8, 3) and (short == 1.0).all()


class SlowBackend:
    """Takes ``ms_per_instance`` per row of every batch: a stand-in for a model of known cost."""

    def __init__(self, threads: int, ms_per_instance: float) -> None:
        self.threads, self.ms = threads, ms_per_instance

    def run_named(self, inputs: dict) -> list[np.ndarray]:
        import time

        rows = next(iter(inputs.values())).shape[0]
        time.sleep(self.ms * rows / 1000.0)
        return [np.zeros((rows, 2), np.float32)]


CONFIG = HandlerConfig(signature=Signature((InputSpec("x", (4,)),)))


@pytest.mark.parametrize("ms_per_instance, expect_cores", [(5.0, True), (0.0, False)])
def test_load_times_on_one_thread_then_loads_on_the_chosen_threads(monkeypatch: pytest.MonkeyPatch,
                                                                  ms_per_instance: float, expect_cores: bool) -> None:
    monkeypatch.setattr("handlers.thread_policy.available_cores", lambda: 4)
    loads: list[int] = []

    def load(threads: int) -> SlowBackend:
        loads.append(threads)
        return SlowBackend(threads, ms_per_instance)

    backend, choice = load_on_fitting_threads(load, CONFIG, on_gpu=False)
    assert loads[0] == 1 and backend.threads == choice.threads == loads[-1]
    assert (choice.threads == 4) == expect_cores
    assert choice.threads >= 1


def test_explicit_threads_and_gpus_skip_the_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("handlers.thread_policy.available_cores", lambda: 4)
    loads: list[int] = []

    def load(threads: int) -> SlowBackend:
        loads.append(threads)
        return SlowBackend(threads, 0.0)

    _, choice = load_on_fitting_threads(load, HandlerConfig(signature=CONFIG.signature, threads=3), on_gpu=False)
    assert loads == [3] and "handler.threads" in choice.reason
    _, choice = load_on_fitting_threads(load, CONFIG, on_gpu=True)
    assert loads == [3, 3] and "GPU" in choice.reason


def test_time_per_instance_takes_the_fastest_call() -> None:
    backend = SlowBackend(1, 2.0)
    ms = time_per_instance(backend.run_named, {"x": np.zeros((4, 4), np.float32)})
    assert 2.0 <= ms < 4.0


def test_a_composition_is_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its members have deadlines and may fail on purpose: timing them at start would fail the worker."""
    from handlers.composition import CompositionConfig

    monkeypatch.setattr("handlers.thread_policy.available_cores", lambda: 4)
    composition = CompositionConfig.from_dict({"kind": "ensemble", "members": [
        {"name": "a", "file": "members/a.onnx"}, {"name": "b", "file": "members/b.onnx"}]})
    config = HandlerConfig(signature=CONFIG.signature, composition=composition)

    def load(threads: int) -> SlowBackend:
        backend = SlowBackend(threads, 0.0)
        backend.run_named = lambda inputs: (_ for _ in ()).throw(RuntimeError("a member failed"))  # type: ignore[method-assign]
        return backend

    backend, choice = load_on_fitting_threads(load, config, on_gpu=False)
    assert backend.threads == choice.threads == 3 and "composition" in choice.reason
