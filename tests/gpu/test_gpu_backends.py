"""On a real GPU: every backend and variant answers like the same artifact on CPU, within its tolerance.

Skipped (never failed) without CUDA; the ONNX Runtime ones also need onnxruntime-gpu. Run with
``pytest -m gpu tests/gpu``. The models are built here, on CPU, from seeded random weights.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from handlers.devices import DeviceError
from servekit.build.export import ExportSpec, export_onnx, export_torchscript
from support.gpu_artifacts import build_gpu_artifacts
from servekit.build.variants import EXACT, FP16_TOLERANCE, INT8_TOLERANCE

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SHAPE = (3, 32, 32)
SPEC = ExportSpec("image", SHAPE)
BATCH_SIZES = (1, 7, 64, 7, 16)
# variant -> (artifact file, tolerance against the same artifact on CPU)
ONNX_VARIANTS = {"fp32": ("model.onnx", EXACT), "fp16": ("model_fp16.onnx", FP16_TOLERANCE),
                 "int8": ("model_int8.onnx", INT8_TOLERANCE), "qdq": ("model_qdq.onnx", INT8_TOLERANCE)}
TS_VARIANTS = {"fp32": ("model.pt", EXACT), "fp16": ("model_fp16.pt", FP16_TOLERANCE)}


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


needs_ort_cuda = pytest.mark.skipif(not _ort_cuda(), reason="onnxruntime has no CUDA provider (onnxruntime-gpu)")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gpu_artifacts(tmp_path_factory.mktemp("gpu_models"))


def _inputs(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(count, *SHAPE)).astype(np.float32)


@needs_ort_cuda
@pytest.mark.parametrize("variant", sorted(ONNX_VARIANTS))
def test_onnx_variant_on_cuda_gives_the_cpu_answers(artifacts: Path, variant: str) -> None:
    from handlers.backends.onnxruntime import OnnxRuntimeBackend

    name, (rtol, atol) = ONNX_VARIANTS[variant]
    cpu = OnnxRuntimeBackend(artifacts / name, None, 4)
    gpu = OnnxRuntimeBackend(artifacts / name, 0, 4)
    assert gpu.provider == "CUDAExecutionProvider", gpu.describe()
    for size in BATCH_SIZES:
        batch = _inputs(size, seed=size)
        np.testing.assert_allclose(gpu.run(batch), cpu.run(batch), rtol=rtol, atol=atol, err_msg=f"{variant} b{size}")


@needs_ort_cuda
def test_io_binding_on_cuda_answers_like_a_plain_cuda_run(artifacts: Path) -> None:
    from handlers.backends.onnxruntime import OnnxRuntimeBackend

    plain = OnnxRuntimeBackend(artifacts / "model.onnx", 0, 4)
    bound = OnnxRuntimeBackend(artifacts / "model.onnx", 0, 4, io_binding=True)
    assert plain.binding is None and "IO binding" in bound.describe()
    for size in BATCH_SIZES:
        batch = _inputs(size, seed=size)
        np.testing.assert_allclose(bound.run(batch), plain.run(batch), rtol=1e-5, atol=1e-6)
    assert bound.binding.copies == 2 * len(BATCH_SIZES)  # one input in, one output out, per batch


@pytest.mark.parametrize("variant", sorted(TS_VARIANTS))
def test_torchscript_variant_on_cuda_gives_the_cpu_answers(artifacts: Path, variant: str) -> None:
    from handlers.backends.torchscript import TorchScriptBackend

    name, (rtol, atol) = TS_VARIANTS[variant]
    cpu = TorchScriptBackend(artifacts / name, None, 4)
    gpu = TorchScriptBackend(artifacts / name, 0, 4)
    assert gpu.device == torch.device("cuda:0") and "pinned" in gpu.describe()
    for size in BATCH_SIZES:
        batch = _inputs(size, seed=size)
        np.testing.assert_allclose(gpu.run(batch), cpu.run(batch), rtol=rtol, atol=atol, err_msg=f"{variant} b{size}")


def test_int8_torchscript_on_a_gpu_worker_runs_on_cpu_and_says_so(artifacts: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from handlers.backends.torchscript import TorchScriptBackend

    with caplog.at_level(logging.WARNING):
        backend = TorchScriptBackend(artifacts / "model_int8.pt", 0, 2)
    assert backend.device.type == "cpu"
    assert "quantized (INT8) TorchScript runs only on CPU" in caplog.text
    assert backend.run(_inputs(3)).shape == (3, 10)


def test_gpu_id_past_the_last_device_is_an_error_not_a_cpu_fallback(artifacts: Path) -> None:
    from handlers.backends.onnxruntime import OnnxRuntimeBackend
    from handlers.backends.torchscript import TorchScriptBackend

    missing = torch.cuda.device_count()
    with pytest.raises(DeviceError, match=f"given GPU {missing}"):
        TorchScriptBackend(artifacts / "model.pt", missing, 2)
    with pytest.raises(DeviceError, match=f"given GPU {missing}"):
        OnnxRuntimeBackend(artifacts / "model.onnx", missing, 2)


class RowsSeeEachOther(torch.nn.Module):
    """Subtracts the batch mean: a padded row changes every answer, so CUDA graphs must be refused."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        flat = image.flatten(1)[:, :10]
        return flat - flat.mean(dim=0, keepdim=True)


GRAPH_SIZES = (8, 64)
GRAPH_BATCHES = (1, 7, 8, 8, 33, 64, 100, 5)  # padded into 8 and 64, replayed, and past the largest


@pytest.mark.parametrize("runtime", ["onnx", "torchscript"])
def test_cuda_graphs_answer_like_plain_cuda_runs(artifacts: Path, runtime: str) -> None:
    if runtime == "onnx" and not _ort_cuda():
        pytest.skip("onnxruntime has no CUDA provider (onnxruntime-gpu)")
    from handlers.backends import load_backend

    path = artifacts / ("model.onnx" if runtime == "onnx" else "model.pt")
    plain, graphed = load_backend(path, 0, 4), load_backend(path, 0, 4, GRAPH_SIZES)
    assert "CUDA graphs for batch [8, 64]" in graphed.describe()
    for size in GRAPH_BATCHES:
        batch = _inputs(size, seed=size)
        np.testing.assert_allclose(graphed.run(batch), plain.run(batch), rtol=1e-3, atol=1e-5, err_msg=f"b{size}")
    assert "CUDA graphs" in graphed.describe()  # still on: every bucket agreed with a plain run


@pytest.mark.parametrize("runtime", ["onnx", "torchscript"])
def test_a_model_whose_rows_see_each_other_gets_no_cuda_graphs(tmp_path: Path, runtime: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    if runtime == "onnx" and not _ort_cuda():
        pytest.skip("onnxruntime has no CUDA provider (onnxruntime-gpu)")
    from handlers.backends import load_backend

    model = RowsSeeEachOther().eval()
    path = (export_onnx(model, SPEC, tmp_path / "m.onnx") if runtime == "onnx"
            else export_torchscript(model, SPEC, tmp_path / "m.pt"))
    backend = load_backend(path, 0, 2, GRAPH_SIZES)
    batch = _inputs(5)
    with caplog.at_level(logging.WARNING):
        answer = backend.run(batch)
    expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)
    assert "differently from a plain run of those rows" in caplog.text and "CUDA graphs are off" in caplog.text
