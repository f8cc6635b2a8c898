"""TorchScript backend: a scripted/traced module on the worker's GPU or on CPU."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)


class TorchScriptBackend:
    """Loads a TorchScript file once; runs batches without autograd."""

    def __init__(self, path: Path, gpu_id: int | None, threads: int) -> None:
        use_cuda = gpu_id is not None and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{gpu_id}" if use_cuda else "cpu")
        self.threads = threads
        self.module = torch.jit.load(str(path), map_location=self.device).eval()
        self.input_dtype = _first_param_dtype(self.module)
        logger.info("TorchScript backend: %s", self.describe())

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; output comes back as float32 numpy on the host."""
        tensor = torch.from_numpy(batch).to(self.device, dtype=self.input_dtype, non_blocking=True)
        with torch.inference_mode(), intra_op_threads(None if self.device.type == "cuda" else self.threads):
            output = self.module(tensor)
        return output.float().cpu().numpy()

    def describe(self) -> str:
        """Runtime, device, dtype and threads."""
        threads = "" if self.device.type == "cuda" else f", {self.threads} intra-op threads"
        return f"torchscript on {self.device} ({self.input_dtype}){threads}"


def _first_param_dtype(module: torch.jit.ScriptModule) -> torch.dtype:
    """float16 for a half-precision module, float32 otherwise (quantized modules have no float params)."""
    for param in module.parameters():
        if param.dtype.is_floating_point:
            return param.dtype
    return torch.float32


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then give the caller back its own count.

    ``torch.set_num_threads`` is process-wide. Set once at load, it leaked into whatever the process
    did next (in-process tools, tests that train afterwards and got a different model). Per batch it
    costs about a microsecond, and nothing when the count already matches. ``None`` leaves it alone.
    """
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
