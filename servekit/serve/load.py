"""Send many requests, sequentially or from a thread pool, and summarize latency."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class LoadResult:
    """Answers in input order, per-request latencies (ms) and the wall time of the whole run."""

    answers: list
    latencies_ms: np.ndarray
    wall_s: float

    def percentile(self, q: float) -> float:
        """Latency percentile in ms."""
        return float(np.percentile(self.latencies_ms, q))

    @property
    def throughput(self) -> float:
        """Requests per second over the run."""
        return len(self.answers) / self.wall_s if self.wall_s else 0.0


def _timed(send: Callable[[Item], Result], item: Item) -> tuple[Result, float]:
    started = time.perf_counter()
    answer = send(item)
    return answer, (time.perf_counter() - started) * 1000.0


def run_load(send: Callable[[Item], Result], items: Sequence[Item], concurrency: int = 1) -> LoadResult:
    """Call ``send`` once per item with ``concurrency`` callers in flight (1 = sequential)."""
    started = time.perf_counter()
    if concurrency <= 1:
        timed = [_timed(send, item) for item in items]
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            timed = list(pool.map(lambda item: _timed(send, item), items))
    wall = time.perf_counter() - started
    return LoadResult([a for a, _ in timed], np.array([t for _, t in timed]), wall)
