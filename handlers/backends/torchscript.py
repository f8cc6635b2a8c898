"""TorchScript backend: a scripted/traced module on the worker's GPU or on CPU."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

logger = logging.getLogger(__name__)


class TorchScriptBackend:
    """Loads a TorchScript file once; runs batches without autograd."""

    def __init__(self, path: Path, gpu_id: int | None, threads: int) -> None:
        use_cuda = gpu_id is not None and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{gpu_id}" if use_cuda else "cpu")
        if not use_cuda:
            # Process-wide, but a TorchServe worker process serves exactly one model.
            torch.set_num_threads(threads)
        self.threads = threads
        self.module = torch.jit.load(str(path), map_location=self.device).eval()
        self.input_dtype = _first_param_dtype(self.module)
        logger.info("TorchScript backend: %s", self.describe())

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; output comes back as float32 numpy on the host."""
        tensor = torch.from_numpy(batch).to(self.device, dtype=self.input_dtype, non_blocking=True)
        with torch.inference_mode():
            output = self.module(tensor)
        return output.float().cpu().numpy()

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Call the module with the inputs as positional arguments in signature order. Floating inputs
        take the module's float dtype; integer and bool inputs keep theirs (int64 ids stay int64)."""
        tensors = [torch.from_numpy(array).to(self.device, dtype=self.input_dtype if array.dtype.kind == "f" else None,
                                              non_blocking=True) for array in inputs.values()]
        with torch.inference_mode():
            output = self.module(*tensors)
        return [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in _as_tensors(output)]

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


def _as_tensors(output: Any) -> list[torch.Tensor]:
    """A module's result as a list: one tensor, a tuple/list of them, or a dict (in its order)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return list(output.values())
    return list(output)
