"""The tuner's search: a pattern search (coordinate hill-climbing) over TorchServe's batching, workers and
threads, measuring as few points as it can. Knows nothing about TorchServe: it calls ``measure``."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
MAX_BATCH_DELAYS_MS = (1, 2, 5, 10, 20, 50)
MIN_GAIN = 0.03  # a move must beat the current best by this much: served throughput wobbles by a few percent


@dataclass(frozen=True)
class Point:
    """One configuration: TorchServe's batching and workers, the handler's threads (and decode threads for images)."""

    batch_size: int
    max_batch_delay_ms: int
    workers: int
    threads: int
    decode_threads: int = 0  # 0: not an image model (or the handler's default)

    def describe(self) -> str:
        """One line for the console and the report."""
        decode = f", decode {self.decode_threads}" if self.decode_threads else ""
        return (f"batch {self.batch_size:>2}, delay {self.max_batch_delay_ms:>2} ms, {self.workers} worker(s) x "
                f"{self.threads} thread(s){decode}")


@dataclass(frozen=True)
class Measured:
    """What one point served: throughput, latency percentiles and errors."""

    point: Point
    throughput: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    seconds: float = 0.0  # wall time the measurement took (registration and warm-up included)

    def meets(self, p99_bound_ms: float | None) -> bool:
        """No errors and, with a bound, p99 within it."""
        return self.errors == 0 and (p99_bound_ms is None or self.p99_ms <= p99_bound_ms)


@dataclass(frozen=True)
class SearchSpace:
    """The values each setting may take on this machine."""

    cores: int
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    delays_ms: tuple[int, ...] = MAX_BATCH_DELAYS_MS
    decode_threads: tuple[int, ...] = ()  # image models: e.g. (1, 2)

    def valid(self, point: Point) -> bool:
        """Inside the lists, and workers x threads within the cores."""
        return (point.batch_size in self.batch_sizes and point.max_batch_delay_ms in self.delays_ms
                and 1 <= point.workers <= self.cores and 1 <= point.threads <= self.cores
                and point.workers * point.threads <= self.cores
                and (point.decode_threads in self.decode_threads if self.decode_threads else point.decode_threads == 0))

    def grid(self) -> list[Point]:
        """Every valid point (what the sparse search avoids measuring)."""
        return [p for p in (Point(b, d, w, t, x) for b in self.batch_sizes for d in self.delays_ms
                            for w in range(1, self.cores + 1) for t in range(1, self.cores + 1)
                            for x in (self.decode_threads or (0,))) if self.valid(p)]

    def moves(self, point: Point) -> Iterator[list[Point]]:
        """Per setting, its two neighbours (one step up, one step down), each as a line to walk along."""
        for field, values in (("batch_size", self.batch_sizes), ("max_batch_delay_ms", self.delays_ms),
                              ("decode_threads", self.decode_threads)):
            current = getattr(point, field)
            if current not in values:
                continue
            at = values.index(current)
            for step in (1, -1):
                line = [replace(point, **{field: v}) for v in _walk(values, at, step)]
                yield [p for p in line if self.valid(p)]
        # Workers and threads trade cores: more workers with fewer threads each, or the reverse.
        for workers in (point.workers + 1, point.workers - 1):
            if workers >= 1:
                yield [p for p in (replace(point, workers=workers, threads=max(1, self.cores // workers)),) if self.valid(p)]
        for threads in (point.threads + 1, point.threads - 1):
            yield [p for p in (replace(point, threads=threads),) if self.valid(p)]


def _walk(values: Sequence[int], at: int, step: int) -> list[int]:
    out, index = [], at + step
    while 0 <= index < len(values):
        out.append(values[index])
        index += step
    return out


def score(result: Measured, p99_bound_ms: float | None) -> float:
    """Throughput for a point within the bound; below every such point otherwise (the lower p99, the better)."""
    if result.meets(p99_bound_ms):
        return result.throughput
    return -result.p99_ms if result.errors == 0 else float("-inf")


def pattern_search(space: SearchSpace, start: Point, measure: Callable[[Point], Measured],
                   p99_bound_ms: float | None = None, max_points: int = 30,
                   on_result: Callable[[Measured], None] | None = None,
                   known: Sequence[Measured] = ()) -> list[Measured]:
    """Walk one setting at a time from ``start``: keep stepping while the score improves by MIN_GAIN, then
    try the next setting; stop after a full pass without a move, or after ``max_points`` measurements.
    ``known``: points measured already (not measured again). Returns every point measured, in order."""
    results: dict[Point, Measured] = {result.point: result for result in known}

    def measured(point: Point) -> Measured:
        if point not in results:
            results[point] = replace(measure(point), point=point)  # the walk goes on from the point asked for
            if on_result is not None:
                on_result(results[point])
        return results[point]

    best = measured(start)
    moved = True
    while moved and len(results) < max_points:
        moved = False
        for line in space.moves(best.point):
            for point in line:
                if len(results) >= max_points:
                    break
                candidate = measured(point)
                if score(candidate, p99_bound_ms) > _bar(best, p99_bound_ms):
                    best, moved = candidate, True
                else:
                    break  # this direction stopped paying: try the next one
            if moved:
                break  # restart the pass from the new best
    return list(results.values())


def _bar(best: Measured, p99_bound_ms: float | None) -> float:
    value = score(best, p99_bound_ms)
    return value * (1 + MIN_GAIN) if value > 0 else value


def winner(results: Sequence[Measured], p99_bound_ms: float | None = None) -> Measured:
    """The best point measured: highest throughput within the bound (lowest p99 when none meets it)."""
    return max(results, key=lambda r: score(r, p99_bound_ms))
