"""The artifacts `servekit gpu-report` times, built and checked on CPU (where the data and tools are).

One folder per model under ``BUILD/gpu/``: the FP32 weights, FP32/FP16 TorchScript, FP32/FP16/static
QDQ INT8 ONNX and the inputs to time with. A GPU machine then needs only torch, numpy and
onnxruntime-gpu: everything here is carried to it as files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from servekit.build import validate
from servekit.build.export import ExportSpec, export_onnx, export_torchscript
from servekit.examples.models import BENCH_CNN_SHAPE, DEMO_MODELS, BenchCNN
from servekit.build.optimize import quantize
from servekit.build.variants import EXACT, FP16_TOLERANCE, INT8_TOLERANCE

GPU_DIR = "gpu"
INPUTS_FILE = "inputs.npy"
WEIGHTS_FILE = "weights.pt"
META_FILE = "meta.json"
BENCH_SEED = 0
BENCH_INPUTS = 64
# artifact file -> (its tolerance against FP32 on CPU, format, precision)
ARTIFACTS = {
    "model.onnx": (EXACT, "onnx", "fp32"),
    "model_fp16.onnx": (FP16_TOLERANCE, "onnx", "fp16"),
    "model_qdq.onnx": (INT8_TOLERANCE, "onnx", "int8"),
    "model.pt": (EXACT, "torchscript", "fp32"),
    "model_fp16.pt": (FP16_TOLERANCE, "torchscript", "fp16"),
}


@dataclass(frozen=True)
class GpuModel:
    """A model the report times: its folder, input name and per-instance shape."""

    name: str
    directory: Path
    input_name: str
    input_shape: tuple[int, ...]

    def inputs(self) -> np.ndarray:
        """The inputs to time with (real held-out data where the model has some)."""
        return np.load(self.directory / INPUTS_FILE)

    def factory(self) -> nn.Module:
        """A fresh FP32 module of this architecture with its weights loaded."""
        model = DEMO_MODELS[self.name].factory() if self.name in DEMO_MODELS else BenchCNN()
        model.load_state_dict(torch.load(self.directory / WEIGHTS_FILE, weights_only=True))
        return model.eval()


def load_models(gpu_dir: Path) -> list[GpuModel]:
    """The models prepared under ``gpu_dir``."""
    models = []
    for meta_path in sorted(gpu_dir.glob(f"*/{META_FILE}")):
        meta = json.loads(meta_path.read_text())
        models.append(GpuModel(meta["name"], meta_path.parent, meta["input_name"], tuple(meta["input_shape"])))
    return models


def prepare(build_dir: Path) -> list[GpuModel]:
    """Build and check every artifact of the demo CNN (trained on digits) and the 3x64x64 benchmark CNN."""
    from servekit.examples.data import load_digits_split
    from servekit.examples.demo import demo_build_inputs
    from servekit.build.model_config import Batching

    gpu_dir = build_dir / GPU_DIR
    digits_cnn, _, heldout = demo_build_inputs("digits_cnn", build_dir, Batching())
    x_train = load_digits_split().x_train.reshape(-1, *DEMO_MODELS["digits_cnn"].input_shape)
    torch.manual_seed(BENCH_SEED)
    bench = BenchCNN().eval()
    bench_inputs = np.random.default_rng(BENCH_SEED).uniform(0, 1, (BENCH_INPUTS, *BENCH_CNN_SHAPE)).astype(np.float32)
    spec = DEMO_MODELS["digits_cnn"]
    return [
        _prepare_one(GpuModel("digits_cnn", gpu_dir / "digits_cnn", spec.input_name, spec.input_shape),
                     digits_cnn, heldout, x_train),
        _prepare_one(GpuModel("bench_cnn", gpu_dir / "bench_cnn", "image", BENCH_CNN_SHAPE),
                     bench, bench_inputs, bench_inputs),
    ]


def _prepare_one(target: GpuModel, model: nn.Module, inputs: np.ndarray, calibration: np.ndarray) -> GpuModel:
    directory = target.directory
    directory.mkdir(parents=True, exist_ok=True)
    spec = ExportSpec(target.input_name, target.input_shape)
    torch.save(model.state_dict(), directory / WEIGHTS_FILE)
    np.save(directory / INPUTS_FILE, np.ascontiguousarray(inputs, dtype=np.float32))
    export_onnx(model, spec, directory / "model.onnx")
    quantize.onnx_fp16(directory / "model.onnx", directory / "model_fp16.onnx")
    quantize.onnx_static_qdq_int8(directory / "model.onnx", directory / "model_qdq.onnx", {spec.input_name: calibration})
    export_torchscript(model, spec, directory / "model.pt")
    export_torchscript(quantize.torch_fp16(model), spec, directory / "model_fp16.pt")
    for name, ((rtol, atol), fmt, _) in ARTIFACTS.items():
        path = directory / name
        if fmt == "onnx":
            validate.check_onnx_model(path)
        runner = validate.onnx_runner(path) if fmt == "onnx" else validate.torchscript_runner(path)
        results = validate.validate_artifact(model, name, runner, inputs, rtol=rtol, atol=atol)
        print("  " + "\n  ".join(r.describe() for r in results))
    meta = {"name": target.name, "input_name": target.input_name, "input_shape": list(target.input_shape)}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return target
