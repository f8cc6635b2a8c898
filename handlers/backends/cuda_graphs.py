"""CUDA graphs per batch-size bucket: which bucket a batch takes, padding, and the torch runner.

A model is captured once per declared batch size (``handler.cuda_graph_batch_sizes``); a batch of
``n`` rows replays the smallest captured size >= n, its extra rows zero, and only its own ``n`` rows
come back. That is exact for models whose rows do not see each other (every eval-mode classifier,
regressor or encoder). When a bucket is captured, a padded batch replayed through it is compared
with a plain run of its real rows; a model that answers differently gets no graphs.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

WARMUP_RUNS = 3  # cuDNN picks its algorithms during the first runs; capture after them
# How close a padded replay must be to a plain run: the export tolerance, and for half precision
# (where a different batch size picks different kernels) what FP16 rounding allows. A model whose
# rows see each other misses by orders of magnitude more (0.23 in the GPU test).
GRAPH_TOLERANCE = {np.dtype(np.float16): (1e-2, 1e-3)}
DEFAULT_GRAPH_TOLERANCE = (1e-3, 1e-5)


def graph_tolerance(dtype: np.dtype | torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing a replay with a plain run of a model computing in ``dtype``."""
    if isinstance(dtype, torch.dtype):
        dtype = torch.empty(0, dtype=dtype).numpy().dtype
    return GRAPH_TOLERANCE.get(np.dtype(dtype), DEFAULT_GRAPH_TOLERANCE)


class GraphMismatch(RuntimeError):
    """A captured graph answered differently from a plain run: the model's rows see each other."""


def bucket_for(rows: int, sizes: Sequence[int]) -> int | None:
    """The smallest captured size that holds ``rows``, or None when the batch is larger than all."""
    return next((size for size in sizes if size >= rows), None)


def probe_rows(rows: int, bucket: int) -> int:
    """How many real rows to check a new graph with: fewer than the bucket, so padding is exercised."""
    return max(1, min(rows, bucket - 1)) if bucket > 1 else 1


def padded(array: np.ndarray, staging: np.ndarray) -> np.ndarray:
    """``array`` written into the first rows of ``staging`` (its rest zeroed); returns ``staging``."""
    rows = array.shape[0]
    staging[:rows] = array
    staging[rows:] = 0
    return staging


class TorchGraphRunner:
    """A TorchScript module captured with ``torch.cuda.CUDAGraph`` per bucket, fed from pinned memory."""

    def __init__(self, module: torch.nn.Module, device: torch.device, dtype: torch.dtype, sizes: Sequence[int]) -> None:
        self.module, self.device, self.dtype = module, device, dtype
        self.sizes = tuple(sorted(set(sizes)))
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def bucket(self, rows: int) -> int | None:
        """The captured size this batch would replay, or None (run it eagerly)."""
        return bucket_for(rows, self.sizes)

    def run(self, staged: torch.Tensor, bucket: int) -> torch.Tensor:
        """Replay the bucket's graph for a pinned host batch; the output rows of that batch, on the device."""
        graph, static_in, static_out = self._graphs.get(bucket) or self._capture(bucket, staged)
        rows = staged.shape[0]
        static_in[:rows].copy_(staged, non_blocking=True)
        static_in[rows:].zero_()
        graph.replay()
        return static_out[:rows]

    def _capture(self, bucket: int, staged: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        probe = probe_rows(staged.shape[0], bucket)
        static_in = torch.zeros((bucket, *staged.shape[1:]), device=self.device, dtype=self.dtype)
        static_in[:probe].copy_(staged[:probe])
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(WARMUP_RUNS):
                self.module(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self.module(static_in)
        if not isinstance(static_out, torch.Tensor):
            raise GraphMismatch(f"CUDA graph for batch {bucket}: the model answers {type(static_out).__name__}, "
                                f"and graphs here replay models with one output tensor")
        graph.replay()
        with torch.inference_mode():
            expected = self.module(static_in[:probe].clone()).float()
        got = static_out[:probe].float()
        rtol, atol = graph_tolerance(self.dtype)
        if not torch.allclose(got, expected, rtol=rtol, atol=atol):
            raise GraphMismatch(f"CUDA graph for batch {bucket} answers {probe} padded rows differently from a "
                                f"plain run of those rows (max |diff| {(got - expected).abs().max().item():.3g})")
        self._graphs[bucket] = (graph, static_in, static_out)
        logger.info("TorchScript: captured a CUDA graph for batch %d", bucket)
        return self._graphs[bucket]
