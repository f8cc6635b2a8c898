"""How many intra-op threads a worker's model gets: measured per model when the worker starts.

A model that costs far more per request than TorchServe's frontend (a BERT, a ResNet) is compute-bound
and gets the cores; one that costs less (a 64-input MLP) is frontend-bound, and every core its threads
take is one the frontend needs to move requests. The measure is the model's share of a request's CPU
time, ``model / (model + frontend)``, with the model timed on one thread at start-up; that share of the
cores (at least one) is split between the model's workers. ``handler.threads`` in model-config.yaml,
when set (``servekit tune`` writes it), skips the measurement.

Measured on 2 cores (issue 23): the constant it replaces (cores - 1) gave a ResNet-18 and a BERT one
thread; two served them 1.6-1.8x and 1.3-1.6x as fast, while the MLP keeps its one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from handlers.cores import available_cores
from handlers.signature import Range, Signature

if TYPE_CHECKING:
    from handlers.backends import Backend
    from handlers.config import HandlerConfig

# CPU milliseconds TorchServe's frontend and the worker's plumbing spend on one request: the no-op handler
# serves about 4,000 requests/s on 2 cores with wrk on the same cores (reports/bench.md), so at most 0.5 ms.
FRONTEND_MS_PER_REQUEST = 0.25
PROBE_ROWS = 4  # instances per timed call: amortises the per-call overhead, cheap for a ResNet on one thread
PROBE_CALLS = 3
PROBE_BUDGET_S = 1.5  # stop timing after this long: one call of a large model says enough
MIN_DECODE_THREADS = 2
PROBE_LENGTH = 32  # dynamic dimensions (tokens, samples) in the probe: a typical request, not the longest


@dataclass(frozen=True)
class ThreadChoice:
    """Threads for each worker's model, and why (the worker log says it)."""

    threads: int
    reason: str


def choose_threads(model_ms_per_instance: float, cores: int, workers: int,
                   frontend_ms: float = FRONTEND_MS_PER_REQUEST) -> ThreadChoice:
    """The model's share of the cores, at least one, split between ``workers``."""
    share = model_ms_per_instance / (model_ms_per_instance + frontend_ms)
    model_cores = min(cores, max(1, round(cores * share)))
    threads = max(1, model_cores // max(1, workers))
    kind = "compute-bound" if model_cores == cores else f"frontend-bound, {cores - model_cores} core(s) left to the frontend"
    return ThreadChoice(threads, f"{threads} intra-op thread(s) x {workers} worker(s) on {cores} core(s): {kind}; "
                                 f"the model is {share:.0%} of a request's CPU time ({model_ms_per_instance:.3f} ms an "
                                 f"instance on 1 thread, the frontend ~{frontend_ms:g} ms)")


def explicit_threads(threads: int) -> ThreadChoice:
    """The count model-config.yaml sets (``handler.threads``)."""
    return ThreadChoice(threads, f"{threads} intra-op thread(s), as handler.threads in model-config.yaml sets")


def gpu_threads(cores: int, workers: int) -> ThreadChoice:
    """On a GPU the model's work is off the CPU: its host threads share what the frontend leaves."""
    threads = max(1, (cores - 1) // max(1, workers)) if cores > 1 else 1
    return ThreadChoice(threads, f"{threads} intra-op thread(s) per worker: the model runs on a GPU, the CPU "
                                 "decodes and moves requests")


def decode_threads(configured: int, workers: int) -> int:
    """Threads that decode a batch's images: ``handler.decode_threads``, else the worker's share of the cores
    (at least 2). Pillow releases the GIL while decoding, and decoding and the model take turns in a worker.
    Measured on 2 cores (ResNet-18, JPEG bodies, c=16): 2 decode threads served 1.10x the images of 1."""
    return configured or max(MIN_DECODE_THREADS, available_cores() // max(1, workers))


def composition_threads(cores: int, workers: int) -> ThreadChoice:
    """A composition's members run side by side on threads of their own, each with a deadline: no probe (a slow
    or failing member would fail the worker's start), and their threads share what the frontend leaves."""
    threads = max(1, (cores - 1) // max(1, workers)) if cores > 1 else 1
    return ThreadChoice(threads, f"{threads} intra-op thread(s) per member: a composition's members run side by "
                                 "side, the frontend keeps a core")


def time_per_instance(run: Callable[[Mapping[str, np.ndarray]], Any], batch: Mapping[str, np.ndarray],
                      calls: int = PROBE_CALLS, budget_s: float = PROBE_BUDGET_S) -> float:
    """Milliseconds per instance of ``run(batch)``: the fastest of a few calls after one warm-up call."""
    rows = next(iter(batch.values())).shape[0]
    started = time.perf_counter()
    run(batch)
    best = float("inf")
    for _ in range(calls):
        call = time.perf_counter()
        run(batch)
        best = min(best, time.perf_counter() - call)
        if time.perf_counter() - started > budget_s:
            break
    return best * 1000.0 / rows


def probe_batch(signature: Signature, rows: int = PROBE_ROWS) -> dict[str, np.ndarray]:
    """A batch the model accepts, built from its signature: each input at its smallest valid value, dynamic
    dimensions at a typical length."""
    batch = {}
    for spec in signature.inputs:
        shape = tuple(d if isinstance(d, int) else _typical(d) for d in spec.shape)
        value = 0 if spec.min_value is None else spec.min_value
        batch[spec.name] = np.full((rows, *shape), value, dtype=spec.dtype)
    return batch


def _typical(dim: Range) -> int:
    return min(dim.high, max(dim.low, PROBE_LENGTH))


def load_on_fitting_threads(load: Callable[[int], Backend], config: HandlerConfig,
                            on_gpu: bool) -> tuple[Backend, ThreadChoice]:
    """Load with ``handler.threads`` when set; else time the model on one thread and reload it on the
    threads its share of the work earns (thread_policy). A model on a GPU leaves the CPU to the frontend."""
    cores = available_cores()
    if config.threads:
        return load(config.threads), explicit_threads(config.threads)
    if on_gpu or config.composition is not None:
        choice = gpu_threads(cores, config.workers) if on_gpu else composition_threads(cores, config.workers)
        return load(choice.threads), choice
    backend = load(1)
    choice = choose_threads(time_per_instance(backend.run_named, probe_batch(config.signature)), cores, config.workers)
    if choice.threads != 1:
        backend = load(choice.threads)
    return backend, choice
