"""In-process latency and throughput of artifacts through the same backends the handler uses."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from handlers.backends import load_backend

WARMUP_CALLS = 20
DEFAULT_ROUNDS = 40
CALLS_PER_ROUND = 10


@dataclass(frozen=True)
class Timing:
    """p50 latency (ms) at one batch size and the throughput it implies (items/s)."""

    batch_size: int
    p50_ms: float
    p90_ms: float
    items_per_s: float


def time_artifacts(paths: Sequence[Path], inputs: np.ndarray | dict[str, np.ndarray], batch_sizes: Sequence[int],
                   threads: int, rounds: int = DEFAULT_ROUNDS, calls: int = CALLS_PER_ROUND) -> dict[Path, dict[int, Timing]]:
    """Time every artifact at every batch size, interleaved round by round so they share the noise.

    ``inputs``: one array, or one per input name (multi-input models run through ``run_named``).
    """
    backends = {path: load_backend(path, None, threads) for path in paths}
    named = inputs if isinstance(inputs, dict) else None
    batches = {b: ({name: _resized(array, b) for name, array in named.items()} if named else _resized(inputs, b))
               for b in batch_sizes}
    samples: dict[tuple[Path, int], list[float]] = {(p, b): [] for p in paths for b in batch_sizes}
    for backend in backends.values():
        for batch in batches.values():
            for _ in range(WARMUP_CALLS):
                _run(backend, batch)
    for _ in range(rounds):
        for path, backend in backends.items():
            for size, batch in batches.items():
                for _ in range(calls):
                    started = time.perf_counter()
                    _run(backend, batch)
                    samples[(path, size)].append((time.perf_counter() - started) * 1000.0)
    timings: dict[Path, dict[int, Timing]] = {p: {} for p in paths}
    for (path, size), values in samples.items():
        p50 = float(np.percentile(values, 50))
        timings[path][size] = Timing(size, p50, float(np.percentile(values, 90)), size / (p50 / 1000.0))
    return timings


def _resized(array: np.ndarray, rows: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(array, (rows, *array.shape[1:])))


def _run(backend, batch: np.ndarray | dict[str, np.ndarray]) -> None:
    if isinstance(batch, dict):
        backend.run_named(batch)
    else:
        backend.run(batch)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return float(np.median(samples))
