"""INT8 and FP16 conversions: PyTorch dynamic quantization, ONNX Runtime dynamic/static QDQ, ONNX FP16."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Layer types torch's dynamic quantization supports; Conv layers are not among them, so a CNN
# keeps FP32 convolutions and only its Linear layers become INT8.
DYNAMIC_QUANT_LAYERS = {nn.Linear, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell}
CALIBRATION_SAMPLES = 256


def torch_dynamic_int8(model: nn.Module) -> nn.Module:
    """INT8 weights, activations quantized on the fly, for every supported layer type."""
    with warnings.catch_warnings():
        # torch 2.13 warns that quantized dtypes will be deprecated; they still work, and the
        # report says so. Don't repeat it once per layer.
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")
        return torch.ao.quantization.quantize_dynamic(model.eval(), DYNAMIC_QUANT_LAYERS, dtype=torch.qint8)


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
