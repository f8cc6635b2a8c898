"""ONNX Runtime IO binding: device buffers reused across batches, and CUDA graphs per batch-size bucket."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from handlers.backends.telemetry import opt_out_of_ort_telemetry
from handlers.backends.cuda_graphs import GraphMismatch, bucket_for, graph_tolerance, padded, probe_rows

opt_out_of_ort_telemetry()
import onnxruntime as ort  # noqa: E402  (after the opt-out: ORT reads it once, at start-up)

logger = logging.getLogger(__name__)

GRAPH_ID = "gpu_graph_id"  # ORT run option: which captured CUDA graph a run replays (-1: none)
CAPTURE_RUNS = 3           # ORT warms up, then captures, within the first runs of a graph id
# A session with CUDA graphs enabled captures any run it is not told otherwise about: every run that
# is not a bucket's replay says so.
RUN_WITHOUT_GRAPH = ort.RunOptions()
RUN_WITHOUT_GRAPH.add_run_config_entry(GRAPH_ID, "-1")


class BoundRunner:
    """Runs a session through IO binding: each input copied to the device once per batch, outputs
    allocated on the device and copied back once, device buffers reused while the shapes repeat.

    A plain ``session.run`` on CUDA allocates its device inputs and outputs per call; with a
    server's batches mostly of one size, reusing bound buffers saves those allocations and keeps
    exactly one host-to-device and one device-to-host copy per tensor.
    """

    def __init__(self, session: ort.InferenceSession, device: str, device_id: int,
                 run_options: ort.RunOptions | None = None) -> None:
        self.session = session
        self.device, self.device_id = device, device_id
        self.run_options = run_options
        self.binding = session.io_binding()
        self.output_names = [o.name for o in session.get_outputs()]
        self._inputs: dict[str, ort.OrtValue] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._outputs_bound_for: tuple | None = None
        self.copies = 0  # host<->device tensor copies so far (inputs in + outputs out)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Copy ``feeds`` in, run, copy every output back."""
        for name, array in feeds.items():
            self._copy_in(name, array)
        shapes = tuple(self._shapes[name] for name in sorted(feeds))
        if self._outputs_bound_for != shapes:
            # New input shapes: let ORT allocate outputs of the new shape on the device.
            for name in self.output_names:
                self.binding.bind_output(name, self.device, self.device_id)
        self.session.run_with_iobinding(self.binding, self.run_options)
        if self._outputs_bound_for != shapes:
            # Keep the outputs ORT allocated and bind them, so the next batch of this shape reuses them.
            for name, value in zip(self.output_names, self.binding.get_outputs()):
                self.binding.bind_ortvalue_output(name, value)
            self._outputs_bound_for = shapes
        outputs = self.binding.copy_outputs_to_cpu()
        if self.device != "cpu":
            self.copies += len(feeds) + len(outputs)
        return outputs

    def _copy_in(self, name: str, array: np.ndarray) -> None:
        value = self._inputs.get(name)
        if value is not None and self._shapes[name] == array.shape:
            value.update_inplace(array)
            return
        # On the CPU an OrtValue wraps the numpy memory it was made from; own a copy, since later
        # batches are written into it in place.
        source = array.copy() if self.device == "cpu" else array
        value = ort.OrtValue.ortvalue_from_numpy(source, self.device, self.device_id)
        self._inputs[name], self._shapes[name] = value, array.shape
        self.binding.bind_ortvalue_input(name, value)


@dataclass
class _Graph:
    """One captured bucket: its binding, fixed device buffers and host staging."""

    binding: ort.IOBinding
    run_options: ort.RunOptions
    inputs: dict[str, ort.OrtValue]
    staging: dict[str, np.ndarray]
    outputs: list[ort.OrtValue] = field(default_factory=list)


class GraphRunner:
    """CUDA graphs, one per batch-size bucket: a batch is padded to the smallest bucket that holds it.

    A captured graph replays every kernel of the model with one launch, which is what small and
    medium models spend most of their GPU time on; it needs fixed shapes and fixed device
    addresses, hence the buckets and the buffers kept per bucket. Batches above the largest bucket
    run through ``fallback``. Each bucket is checked against a plain run when it is captured.
    """

    def __init__(self, session: ort.InferenceSession, device_id: int, sizes: Sequence[int],
                 fallback: BoundRunner) -> None:
        self.session, self.device_id = session, device_id
        self.sizes = tuple(sorted(set(sizes)))
        self.fallback = fallback
        self.output_names = [o.name for o in session.get_outputs()]
        self._graphs: dict[int, _Graph] = {}
        self.copies = 0

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Replay the bucket's graph for ``feeds`` (captured on first use), or run the fallback."""
        rows = next(iter(feeds.values())).shape[0]
        bucket = bucket_for(rows, self.sizes)
        if bucket is None:
            outputs = self.fallback.run(feeds)
            self.copies = self.fallback.copies
            return outputs
        graph = self._graphs.get(bucket)
        if graph is None:
            try:
                graph = self._capture(bucket, feeds)
            except GraphMismatch as mismatch:
                logger.warning("%s: CUDA graphs are off for this model", mismatch)
                self.sizes = ()
                return self.run(feeds)
        for name, array in feeds.items():
            # A full bucket goes straight in; only a short batch pays the copy into zero-padded staging.
            graph.inputs[name].update_inplace(array if rows == bucket else padded(array, graph.staging[name]))
        self.session.run_with_iobinding(graph.binding, graph.run_options)
        self.copies += len(feeds) + len(graph.outputs)
        return [value.numpy()[:rows] for value in graph.outputs]

    def _capture(self, bucket: int, feeds: dict[str, np.ndarray]) -> _Graph:
        rows = next(iter(feeds.values())).shape[0]
        probe = probe_rows(rows, bucket)
        staging = {name: np.zeros((bucket, *array.shape[1:]), array.dtype) for name, array in feeds.items()}
        example = {name: padded(array[:probe], staging[name]).copy() for name, array in feeds.items()}
        expected = self.session.run(None, {name: array[:probe] for name, array in feeds.items()}, RUN_WITHOUT_GRAPH)
        shapes = [(bucket, *out.shape[1:]) for out in expected]
        options = ort.RunOptions()
        options.add_run_config_entry(GRAPH_ID, str(len(self._graphs) + 1))
        binding = self.session.io_binding()
        inputs = {name: ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id) for name, array in example.items()}
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        outputs = [ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, out.dtype), "cuda", self.device_id)
                   for shape, out in zip(shapes, expected)]
        for name, value in zip(self.output_names, outputs):
            binding.bind_ortvalue_output(name, value)
        for _ in range(CAPTURE_RUNS):
            self.session.run_with_iobinding(binding, options)
        for name, want, value in zip(self.output_names, expected, outputs):
            got = value.numpy()[:probe]
            # ORT replays the kernels its plain run picked, FP16 models included (measured on an H200).
            rtol, atol = graph_tolerance(want.dtype)
            if not np.allclose(got, want, rtol=rtol, atol=atol):
                raise GraphMismatch(f"CUDA graph for batch {bucket} answers {probe} padded rows differently from a "
                                    f"plain run of those rows (output {name!r}, max |diff| "
                                    f"{np.abs(got - want).max():.3g})")
        graph = _Graph(binding, options, inputs, staging, outputs)
        self._graphs[bucket] = graph
        logger.info("ONNX Runtime: captured a CUDA graph for batch %d", bucket)
        return graph
