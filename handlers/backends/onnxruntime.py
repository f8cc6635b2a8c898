"""ONNX Runtime backend: CUDA provider on the worker's GPU when present, CPU otherwise."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from handlers.backends import opt_out_of_ort_telemetry

opt_out_of_ort_telemetry()
import onnxruntime as ort  # noqa: E402  (after the opt-out: ORT reads it once, at start-up)

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


class OnnxRuntimeBackend:
    """One InferenceSession per worker with a bounded thread pool."""

    def __init__(self, path: Path, gpu_id: int | None, threads: int) -> None:
        options = ort.SessionOptions()
        # BaseHandler leaves intra-op at "all cores" per worker, which oversubscribes.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning intra-op threads burn the cores TorchServe's frontend needs to move requests;
        # on a shared box that costs more throughput than the wake-up latency it saves.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.threads = threads
        wants_cuda = gpu_id is not None and CUDA_PROVIDER in ort.get_available_providers()
        # TorchServe's own ORT setup ignores gpu_id (every worker on GPU 0); honour it here.
        providers = [(CUDA_PROVIDER, {"device_id": int(gpu_id)}), CPU_PROVIDER] if wants_cuda else [CPU_PROVIDER]
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.input_dtype = ORT_TO_NUMPY.get(self.session.get_inputs()[0].type, np.float32)
        self.input_dtypes = {i.name: ORT_TO_NUMPY.get(i.type, np.float32) for i in self.session.get_inputs()}
        if wants_cuda and self.session.get_providers()[0] != CUDA_PROVIDER:
            logger.warning("CUDA was requested for GPU %s but ONNX Runtime runs on %s", gpu_id, self.session.get_providers())
        logger.info("ONNX Runtime backend: %s", self.describe())

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; output comes back as float32 numpy."""
        feed = {self.input_name: batch.astype(self.input_dtype, copy=False)}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Feed every session input by name (cast to the graph's dtype); all outputs in the graph's order.

        An input the exporter dropped (the model never reads it) is not fed."""
        feed = {name: array.astype(self.input_dtypes[name], copy=False) for name, array in inputs.items()
                if name in self.input_dtypes}
        return self.session.run(None, feed)

    def describe(self) -> str:
        """Runtime, providers and threads."""
        return f"onnxruntime {ort.__version__} on {self.session.get_providers()[0]}, {self.threads} intra-op threads"
