"""ONNX Runtime backend: CUDA provider on the worker's GPU (CUDA graphs when configured), CPU otherwise."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from handlers.backends.telemetry import opt_out_of_ort_telemetry
from handlers.devices import checked_gpu_id

opt_out_of_ort_telemetry()
import onnxruntime as ort  # noqa: E402  (after the opt-out: ORT reads it once, at start-up)

from handlers.backends.ort_binding import RUN_WITHOUT_GRAPH, BoundRunner, GraphRunner  # noqa: E402

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
                "tensor(bool)": np.bool_}


class OnnxRuntimeBackend:
    """One InferenceSession per worker with a bounded thread pool."""

    def __init__(self, path: Path, gpu_id: int | None, threads: int, io_binding: bool = False,
                 cuda_graph_sizes: Sequence[int] = ()) -> None:
        device_id = checked_gpu_id(gpu_id)
        self.threads = threads
        self.session = _session(path, threads, device_id, bool(cuda_graph_sizes))
        self.provider = self.session.get_providers()[0]
        if device_id is not None and self.provider != CUDA_PROVIDER:
            logger.warning("GPU %s was assigned to this worker but ONNX Runtime runs on %s (providers available: "
                           "%s); install onnxruntime-gpu to use it", device_id, self.provider,
                           ort.get_available_providers())
        self.inputs = [(i.name, ORT_TO_NUMPY.get(i.type, np.float32)) for i in self.session.get_inputs()]
        self.input_name, self.input_dtype = self.inputs[0]
        self.input_dtypes = dict(self.inputs)
        self.binding = self._runner(device_id or 0, io_binding, cuda_graph_sizes)
        logger.info("ONNX Runtime backend: %s", self.describe())

    def _runner(self, device_id: int, io_binding: bool, graph_sizes: Sequence[int]) -> BoundRunner | GraphRunner | None:
        """How batches run: CUDA graphs (through IO binding) when configured, else a plain ``run``.

        IO binding alone is off by default: with host batches in and host answers out it measured
        no faster than ``run`` on an H200 (-7 % to +1 %, reports/gpu.md); what it enables is graphs.
        """
        on_cuda = self.provider == CUDA_PROVIDER
        graphs = on_cuda and bool(graph_sizes) and _graphs_enabled(self.session)
        if not io_binding and not graphs:
            return None
        bound = BoundRunner(self.session, "cuda" if on_cuda else "cpu", device_id,
                            RUN_WITHOUT_GRAPH if graphs else None)
        return GraphRunner(self.session, device_id, graph_sizes, bound) if graphs else bound

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; output comes back as float32 numpy."""
        return np.asarray(self.run_named({self.input_name: batch})[0], dtype=np.float32)

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Feed every session input by name (cast to the graph's dtype); all outputs in the graph's order.

        An input the exporter dropped (the model never reads it) is not fed."""
        feed = {name: np.ascontiguousarray(array, dtype=self.input_dtypes[name]) for name, array in inputs.items()
                if name in self.input_dtypes}
        if self.binding is not None:
            return self.binding.run(feed)
        return self.session.run(None, feed)

    def describe(self) -> str:
        """Runtime, provider, IO binding and threads."""
        binding = ", IO binding" if self.binding is not None else ""
        if isinstance(self.binding, GraphRunner):
            binding += f", CUDA graphs for batch {list(self.binding.sizes)}"
        threads = "" if self.provider == CUDA_PROVIDER else f", {self.threads} intra-op threads"
        return f"onnxruntime {ort.__version__} on {self.provider}{binding}{threads}"


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # BaseHandler leaves intra-op at "all cores" per worker, which oversubscribes.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning intra-op threads burn the cores TorchServe's frontend needs to move requests;
    # on a shared box that costs more throughput than the wake-up latency it saves.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _session(path: Path, threads: int, device_id: int | None, graphs: bool) -> ort.InferenceSession:
    """The session; asked for CUDA graphs and refused them (some node is not on CUDA), one without."""
    options = _session_options(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=_providers(device_id, graphs))
    except Exception as err:  # noqa: BLE001  (ORT raises its own Fail/RuntimeException types)
        if not graphs or device_id is None:
            raise
        logger.warning("ONNX Runtime refused CUDA graphs for %s (%s); running without them", path.name, err)
        return ort.InferenceSession(str(path), sess_options=options, providers=_providers(device_id, False))


def _graphs_enabled(session: ort.InferenceSession) -> bool:
    return session.get_provider_options().get(CUDA_PROVIDER, {}).get("enable_cuda_graph") == "1"


def _providers(device_id: int | None, graphs: bool = False) -> list:
    """CUDA on the worker's GPU first when this ORT build has it; TorchServe's own ORT setup ignores gpu_id."""
    if device_id is None or CUDA_PROVIDER not in ort.get_available_providers():
        return [CPU_PROVIDER]
    # use_tf32 off: the export was validated at rtol 1e-3 / atol 1e-5, and TF32 math drifts past that.
    options = {"device_id": device_id, "use_tf32": "0"}
    if graphs:
        options["enable_cuda_graph"] = "1"
    return [(CUDA_PROVIDER, options), CPU_PROVIDER]
