"""What the same work costs without HTTP: the in-process ceiling and per-request decode cost."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from handlers.backends import load_backend
from handlers.bodies.decode import decode_payload
from servekit.measure.timing import median_seconds

WARMUP = 5


def in_process_items_per_s(model_file: Path, instance: np.ndarray, batch_size: int, threads: int,
                           seconds: float = 3.0) -> float:
    """Items/s of the handler's own backend running full batches back to back, no HTTP."""
    backend = load_backend(model_file, None, threads)
    batch = np.ascontiguousarray(np.repeat(instance[np.newaxis], batch_size, axis=0))
    for _ in range(WARMUP):
        backend.run(batch)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        backend.run(batch)
        calls += 1
    return calls * batch_size / (time.perf_counter() - started)


def decode_cost_us(json_body: Path, npy_body: Path, input_name: str, repeats: int = 200) -> dict[str, float]:
    """Median decode time of one request: JSON as the worker parses it plus our array conversion, vs npy."""
    raw_json, raw_npy = json_body.read_bytes(), npy_body.read_bytes()
    return {
        # The TorchServe worker json.loads every application/json body before the handler sees it.
        "json_us": median_seconds(lambda: decode_payload(json.loads(raw_json), "application/json", input_name), repeats) * 1e6,
        "npy_us": median_seconds(lambda: decode_payload(raw_npy, "application/x-npy", input_name), repeats) * 1e6,
    }
