"""INT8 and FP16 conversions: PyTorch dynamic quantization, PT2E static INT8 (torchao), ONNX Runtime
dynamic/static QDQ, ONNX FP16."""
from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch import nn

from servekit.build.deprecations import quiet_ao_quantization

# Layer types torch's dynamic quantization supports; Conv layers are not among them, so a CNN
# keeps FP32 convolutions and only its Linear layers become INT8.
DYNAMIC_QUANT_LAYERS = {nn.Linear, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell}
CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH = 32

if TYPE_CHECKING:
    from servekit.build.export import ExportSpec


def torch_dynamic_int8(model: nn.Module) -> nn.Module:
    """INT8 weights, activations quantized on the fly, for every supported layer type."""
    with warnings.catch_warnings():
        # torch 2.13 warns that quantized dtypes will be deprecated; they still work, and the
        # report says so. Don't repeat it once per layer.
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")
        with quiet_ao_quantization():
            return torch.ao.quantization.quantize_dynamic(model.eval(), DYNAMIC_QUANT_LAYERS, dtype=torch.qint8)


def pt2e_int8(model: nn.Module, spec: ExportSpec, calibration: np.ndarray | dict[str, np.ndarray]) -> nn.Module:
    """PT2E static INT8 with torchao's x86 Inductor quantizer: INT8 weights and activations, Conv included.

    ``calibration``: training inputs, one array or one per input name (a model with several inputs).

    Returns the quantized (Q/DQ) eager module, the twin to validate against; ``export.compile_aoti``
    turns it into a ``.pt2`` whose Q/DQ pairs Inductor fuses into oneDNN INT8 kernels.
    """
    from servekit.build.export import capture

    with _quiet_torchao_import():
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    for name in single_channel_convs(model):
        quantizer.set_module_name_qconfig(name, None)
    prepared = prepare_pt2e(capture(model, spec).module(), quantizer)
    named = calibration if isinstance(calibration, dict) else {spec.signature.names[0]: calibration}
    samples = [torch.from_numpy(np.ascontiguousarray(named[spec_in.name][:CALIBRATION_SAMPLES], dtype=spec_in.dtype))
               for spec_in in spec.signature.inputs]
    with torch.no_grad():
        for start in range(0, len(samples[0]), CALIBRATION_BATCH):
            prepared(*(sample[start:start + CALIBRATION_BATCH] for sample in samples))
    # The twin is validated like any model (which calls .eval()); exported modules refuse that by default.
    return allow_exported_model_train_eval(convert_pt2e(prepared))


def single_channel_convs(model: nn.Module) -> list[str]:
    """Convolutions over one input channel: they stay FP32 in PT2E INT8.

    torch 2.13 + torchao 0.18 compile an INT8 convolution with one input channel wrongly when the
    batch is dynamic (AOTInductor output off by the size of the output itself; static batch is right;
    3 or 4 channels are right). Seen on the digits CNN; the variant gates would reject it.
    """
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d) and module.in_channels == 1]


@contextlib.contextmanager
def _quiet_torchao_import() -> Iterator[None]:
    """torchao's CPU-less CUDA kernels fail to load on a CPU wheel, logged per file; PT2E needs none of them."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def torch_fp16(model: nn.Module) -> nn.Module:
    """A half-precision copy (weights and compute in FP16); the original stays FP32."""
    return copy.deepcopy(model).eval().half()


def _preprocessed(source: Path, target: Path) -> Path:
    """ORT's recommended pre-processing (shape inference, graph optimization) before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_suffix(".pre.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    return prepared


def onnx_dynamic_int8(source: Path, target: Path) -> Path:
    """ONNX Runtime dynamic quantization (INT8 weights; MatMul/Gemm and, where supported, Conv)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = _preprocessed(source, target)
    try:
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    return target


class _ArrayReader:
    """CalibrationDataReader over named arrays, one instance (batch of 1) at a time."""

    def __init__(self, data: dict[str, np.ndarray]) -> None:
        count = min(len(array) for array in data.values())
        self._batches = iter([{name: array[row:row + 1] for name, array in data.items()} for row in range(count)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def onnx_static_qdq_int8(source: Path, target: Path, calibration: dict[str, np.ndarray]) -> Path:
    """Static QDQ quantization calibrated on (training) data by input name: INT8 activations and weights,
    Conv included."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    prepared = _preprocessed(source, target)
    samples = {name: array[:CALIBRATION_SAMPLES] for name, array in calibration.items()}
    try:
        quantize_static(str(prepared), str(target), _ArrayReader(samples),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax)
    finally:
        prepared.unlink(missing_ok=True)
    return target


def onnx_fp16(source: Path, target: Path) -> Path:
    """FP16 weights and compute; inputs and outputs stay FP32 so clients need not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    # keep_io_types appends the input casts at the end of the node list; the checker wants order.
    topologically_sort(converted.graph)
    onnx.save(converted, str(target))
    return target


def topologically_sort(graph) -> None:  # onnx.GraphProto
    """Reorder ``graph.node`` in place so every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or dangling inputs near {pending[0].name!r}")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)
