"""The GPU tests' artifacts build without CUDA, so CI catches a stale build step: a changed quantize signature
once errored all 11 GPU tests, and was seen only on the GPU machine."""
from __future__ import annotations

from pathlib import Path

from support.gpu_artifacts import build_gpu_artifacts


def test_the_gpu_tests_artifacts_build_on_any_machine(tmp_path: Path) -> None:
    root = build_gpu_artifacts(tmp_path)
    assert {p.name for p in root.iterdir()} == {"model.onnx", "model_fp16.onnx", "model_int8.onnx", "model_qdq.onnx",
                                                "model.pt", "model_fp16.pt", "model_int8.pt"}
