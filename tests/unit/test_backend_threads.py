"""The thread counts both backends really run with, read from torch and from the OS, not from a log line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from handlers.backends.torchscript import TorchScriptBackend

ORT_THREADS = 3  # neither 1 nor a core count: ORT's default (0 = all cores) cannot pass for it

# A fresh process, so no other test's threads are counted: ORT starts intra_op_num_threads - 1 pool
# threads (the caller's thread is the first) when the session is created.
ORT_PROBE = """
import os, sys
from pathlib import Path
from handlers.backends.onnxruntime import OnnxRuntimeBackend
before = len(os.listdir("/proc/self/task"))
backend = OnnxRuntimeBackend(Path(sys.argv[1]), None, int(sys.argv[2]))
print(len(os.listdir("/proc/self/task")) - before, backend.session.get_session_options().intra_op_num_threads)
"""


def test_torchscript_runs_with_its_threads_and_leaves_the_process_its_own(built_models) -> None:
    built = built_models["digits_mlp"]
    own = torch.get_num_threads()
    wanted = own + 2
    backend = TorchScriptBackend(built.directory / "model.pt", None, wanted)
    assert torch.get_num_threads() == own, "loading the model changed the process-wide thread count"
    seen: list[int] = []
    module = backend.module

    def probe(batch: torch.Tensor) -> torch.Tensor:  # torch's thread count while the model runs
        seen.append(torch.get_num_threads())
        return module(batch)

    backend.module = probe
    out = backend.run(np.ascontiguousarray(built.x_test[:4]))
    assert seen == [wanted]
    assert torch.get_num_threads() == own, "running a batch changed the process-wide thread count"
    assert out.shape == (4, 10)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_onnxruntime_session_starts_exactly_its_intra_op_threads(built_models) -> None:
    built = built_models["digits_mlp"]
    probe = subprocess.run([sys.executable, "-c", ORT_PROBE, str(built.directory / "model.onnx"), str(ORT_THREADS)],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    started, configured = map(int, probe.stdout.split()[-2:])
    assert configured == ORT_THREADS
    assert started == ORT_THREADS - 1
