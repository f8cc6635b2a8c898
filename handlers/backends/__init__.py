"""Model runtimes behind one tiny interface, chosen by file type in one place."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np

AOTI_SUFFIXES = (".pt2",)
ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".torchscript", ".ts")


class Backend(Protocol):
    """Runs a batch of numpy inputs; says which device/provider really runs it."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Return the model's output for a ``[N, ...]`` batch."""

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Run one batch given as input name -> ``[N, ...]`` array, in the signature's order and each in its
        declared dtype (int64 ids stay int64); return every model output, in the model's order."""

    def describe(self) -> str:
        """Human-readable runtime, device and threads."""


def load_backend(path: Path, gpu_id: int | None, threads: int, cuda_graph_sizes: Sequence[int] = ()) -> Backend:
    """Load ``path`` with the runtime its suffix names; GPU ``gpu_id`` when usable, else CPU.

    ``cuda_graph_sizes``: batch sizes to capture as CUDA graphs on a GPU (ignored on CPU).
    """
    suffix = Path(path).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from handlers.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(Path(path), gpu_id, threads, cuda_graph_sizes=cuda_graph_sizes)
    if suffix in TORCHSCRIPT_SUFFIXES:
        from handlers.backends.torchscript import TorchScriptBackend

        return TorchScriptBackend(Path(path), gpu_id, threads, cuda_graph_sizes)
    if suffix in AOTI_SUFFIXES:
        from handlers.backends.aoti import AotiBackend

        return AotiBackend(Path(path), gpu_id, threads)
    raise ValueError(f"no backend for {path.name!r}: expected {ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES + AOTI_SUFFIXES}")
