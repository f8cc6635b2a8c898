"""Helpers for tests against a live TorchServe."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from servekit.serve.client import TorchServeClient
from servekit.measure.reliability import call_together, send_together  # noqa: F401  (re-exported for tests)
from servekit.serve.torchserve import REPO_ROOT, TorchServe

ARCHIVE_SUFFIXES = ("ts", "onnx")
CI_VALUES = ("1", "true", "yes")
BATCH_SIZE = 16
MAX_BATCH_DELAY_MS = 20


def run_archive_sh(model_store: Path, *model_dirs: Path) -> subprocess.CompletedProcess:
    """Run archive.sh as a user would, with the venv's archiver on PATH."""
    env = {**os.environ, "MODEL_STORE": str(model_store),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(REPO_ROOT / "archive.sh"), *map(str, model_dirs)], env=env,
                          capture_output=True, text=True)


def under_ci() -> bool:
    """CI=true, as CI services set it."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def require(available: bool, what: str) -> None:
    """Skip a live test when ``what`` is missing on a developer's machine; fail it under CI=true,
    where a run that tested nothing live must not pass."""
    if available:
        return
    if under_ci():
        pytest.fail(f"{what} is missing and CI is set: live tests must run in CI", pytrace=False)
    pytest.skip(f"{what} is missing (set CI=true to make this a failure)")


@dataclass
class LiveServer:
    """The running server, its client and the archives registered in it."""

    server: TorchServe
    client: TorchServeClient
    archives: dict[str, str]  # archive name -> demo model name


BATCH_COUNTERS = ("HandlerBatches", "HandlerBatchedInstances")  # emitted per batch by handlers/handler.py


def batch_counters(client: TorchServeClient, model: str) -> tuple[float, float]:
    """The model's batches and batched instances so far, from TorchServe's Prometheus endpoint."""
    import re

    text = client.metrics()
    values = []
    for name in BATCH_COUNTERS:
        found = re.search(rf'^{name}{{[^}}]*ModelName="{re.escape(model)}"[^}}]*}} ([0-9.eE+-]+)$', text, re.M)
        values.append(float(found[1]) if found else 0.0)
    return values[0], values[1]


def mean_batch_size(client: TorchServeClient, model: str, before: tuple[float, float], instances: int,
                    timeout_s: float = 30.0) -> float:
    """Instances per batch since ``before`` (``batch_counters`` then), once the counters hold the
    ``instances`` answered since: how batching is seen now that no answer header tells a client about others."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        batches, batched = batch_counters(client, model)
        if batched - before[1] >= instances or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert batched - before[1] >= instances, f"{model}: metrics count {batched - before[1]:g} of {instances} instances"
    return (batched - before[1]) / max(1.0, batches - before[0])
