"""TorchScript backend: a scripted/traced module on the worker's GPU or on CPU."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from handlers.backends.cuda_graphs import GraphMismatch, TorchGraphRunner
from handlers.backends.threads import intra_op_threads
from handlers.devices import checked_gpu_id

logger = logging.getLogger(__name__)


class TorchScriptBackend:
    """Loads a TorchScript file once; runs batches without autograd."""

    def __init__(self, path: Path, gpu_id: int | None, threads: int, cuda_graph_sizes: Sequence[int] = ()) -> None:
        device_id = checked_gpu_id(gpu_id)
        with warnings.catch_warnings():
            # torch 2.13 deprecates torch.jit and warns per call; the log line below says it once, with the successor.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu").eval()
        use_cuda = device_id is not None and torch.cuda.is_available() and not is_quantized(module)
        if device_id is not None and not use_cuda:
            reason = (f"torch {torch.__version__} has no CUDA" if not torch.cuda.is_available()
                      else "quantized (INT8) TorchScript runs only on CPU")
            logger.warning("GPU %s was assigned to this worker but %s: running on CPU", device_id, reason)
        self.device = torch.device(f"cuda:{device_id}" if use_cuda else "cpu")
        if use_cuda:
            # The export was validated at rtol 1e-3 / atol 1e-5; cuDNN's default TF32 convolutions
            # drift past that. An FP16 variant is the gated way to trade precision for speed.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.threads = threads
        self.module = module.to(self.device)
        self.input_dtype = module_dtype(self.module)
        self._pinned: torch.Tensor | None = None
        self.graphs = TorchGraphRunner(self.module, self.device, self.input_dtype, cuda_graph_sizes) if (
            use_cuda and cuda_graph_sizes) else None
        self.copies = 0  # host<->device tensor copies so far (batch in + output out), on CUDA
        logger.info("TorchScript backend: %s (torch.jit is deprecated in torch 2.13; a .pt2 archive is its successor)",
                    self.describe())

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; output comes back as float32 numpy on the host."""
        return np.asarray(self.run_named({"input": batch})[0], dtype=np.float32)

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Call the module with the inputs as positional arguments in signature order. Floating inputs
        take the module's float dtype; integer and bool inputs keep theirs (int64 ids stay int64).

        On a GPU, floating inputs are copied in from pinned memory, and a one-input model replays
        its CUDA graph when one is configured for the batch's size."""
        arrays = list(inputs.values())
        if self.graphs is not None and len(arrays) == 1 and self.graphs.bucket(arrays[0].shape[0]) is not None:
            outputs = [self._replay(arrays[0])]
        else:
            tensors = [self._to_device(array) if array.dtype.kind == "f"
                       else torch.from_numpy(np.ascontiguousarray(array)).to(self.device) for array in arrays]
            with torch.inference_mode(), intra_op_threads(None if self.device.type == "cuda" else self.threads):
                outputs = _as_tensors(self.module(*tensors))
        if self.device.type == "cuda":
            self.copies += len(arrays) + len(outputs)
        return [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in outputs]

    def _replay(self, batch: np.ndarray) -> torch.Tensor:
        """The batch through the CUDA graph of its bucket; off for good if the graph disagrees."""
        assert self.graphs is not None
        try:
            return self.graphs.run(self._pinned_copy(batch), self.graphs.bucket(batch.shape[0]))
        except GraphMismatch as mismatch:
            logger.warning("%s: CUDA graphs are off for this model", mismatch)
            self.graphs = None
            with torch.inference_mode():
                return self.module(self._to_device(batch))

    def _pinned_copy(self, batch: np.ndarray) -> torch.Tensor:
        """The batch in our pinned host buffer (grown, never shrunk)."""
        host = torch.from_numpy(np.ascontiguousarray(batch))
        if self._pinned is None or self._pinned.numel() < host.numel() or self._pinned.dtype != host.dtype:
            self._pinned = torch.empty(host.numel(), dtype=host.dtype, pin_memory=True)
        staged = self._pinned[:host.numel()].view(host.shape)
        staged.copy_(host)
        return staged

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        """The batch in the module's dtype on its device; on CUDA copied once, from pinned host memory.

        A copy from pageable memory is staged by the driver through its own pinned buffer; copying
        into one pinned buffer of ours (grown, never shrunk) lets the transfer run as a single DMA.
        The previous batch's copy has finished by now: run() waited for its output.
        """
        if self.device.type != "cuda":
            return torch.from_numpy(np.ascontiguousarray(batch)).to(self.input_dtype)
        staged = self._pinned_copy(batch)
        # Cast on the device: an FP16 module gets its half-precision input without a host-side pass.
        return staged.to(self.device, non_blocking=True).to(self.input_dtype)

    def describe(self) -> str:
        """Runtime, device, dtype and threads."""
        threads = "" if self.device.type == "cuda" else f", {self.threads} intra-op threads"
        pinned = ", pinned copy-in" if self.device.type == "cuda" else ""
        if self.graphs is not None:
            pinned += f", CUDA graphs for batch {list(self.graphs.sizes)}"
        return f"torchscript on {self.device} ({self.input_dtype}){pinned}{threads}"


def is_quantized(module: torch.jit.ScriptModule) -> bool:
    """True when the module calls quantized kernels (torch's INT8 ops exist for CPU only)."""
    return "quantized::" in str(module.inlined_graph)


def module_dtype(module: torch.nn.Module) -> torch.dtype:
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
