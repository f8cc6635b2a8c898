"""The artifacts the GPU tests load, built on the CPU (so a unit test can build them on any machine)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from servekit.build.export import ExportSpec, export_onnx, export_torchscript
from servekit.build.optimize import quantize
from servekit.examples.models import BenchCNN

SHAPE = (3, 32, 32)
SPEC = ExportSpec("image", SHAPE)


def gpu_test_inputs(count: int, seed: int = 0) -> np.ndarray:
    """Seeded inputs in [0, 1)."""
    return np.random.default_rng(seed).uniform(0, 1, size=(count, *SHAPE)).astype(np.float32)


def build_gpu_artifacts(root: Path) -> Path:
    """Every variant the GPU tests load: ONNX FP32/FP16/dynamic INT8/static QDQ, TorchScript FP32/FP16/INT8."""
    torch.manual_seed(0)
    model = BenchCNN(width=16).eval()
    calibration = gpu_test_inputs(64, seed=1)
    export_onnx(model, SPEC, root / "model.onnx")
    quantize.onnx_fp16(root / "model.onnx", root / "model_fp16.onnx")
    quantize.onnx_dynamic_int8(root / "model.onnx", root / "model_int8.onnx")
    quantize.onnx_static_qdq_int8(root / "model.onnx", root / "model_qdq.onnx", {SPEC.input_name: calibration})
    export_torchscript(model, SPEC, root / "model.pt")
    export_torchscript(quantize.torch_fp16(model), SPEC, root / "model_fp16.pt")
    export_torchscript(quantize.torch_dynamic_int8(model), SPEC, root / "model_int8.pt")
    return root
