"""Backends on the device TorchServe assigns: gpu_id checked, IO binding, fallbacks said out loud.

These run on CPU; tests/gpu/ repeats the device-dependent ones on a real GPU.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from handlers import devices
from handlers.backends import load_backend
from handlers.backends.cuda_graphs import bucket_for, padded
from handlers.backends.onnxruntime import OnnxRuntimeBackend
from handlers.backends.torchscript import TorchScriptBackend, is_quantized, module_dtype
from handlers.config import HandlerConfig
from handlers.errors import ConfigError
from handlers.devices import DeviceError, checked_gpu_id
from servekit.build.export import ExportSpec, export_onnx, export_torchscript
from servekit.examples.models import DigitsCNN
from servekit.build.optimize.quantize import torch_dynamic_int8, torch_fp16

SPEC = ExportSpec("image", (1, 8, 8))
BATCH_SIZES = (1, 7, 7, 64, 7)  # repeats and changes: buffers are reused, then re-made


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    root = tmp_path_factory.mktemp("cnn")
    return {
        "onnx": export_onnx(model, SPEC, root / "model.onnx"),
        "ts": export_torchscript(model, SPEC, root / "model.pt"),
        "ts_fp16": export_torchscript(torch_fp16(model), SPEC, root / "fp16.pt"),
        "ts_int8": export_torchscript(torch_dynamic_int8(model), SPEC, root / "int8.pt"),
    }


def _batches() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(0, 1, size=(n, 1, 8, 8)).astype(np.float32) for n in BATCH_SIZES]


def test_io_binding_answers_like_a_plain_run_and_counts_its_copies(cnn_files) -> None:
    plain = OnnxRuntimeBackend(cnn_files["onnx"], None, 1, io_binding=False)
    bound = OnnxRuntimeBackend(cnn_files["onnx"], None, 1, io_binding=True)
    assert plain.binding is None and bound.binding is not None and "IO binding" in bound.describe()
    for batch in _batches():
        expected = plain.run(batch)
        actual = bound.run(batch)
        assert actual.shape == (batch.shape[0], 10)
        np.testing.assert_array_equal(actual, expected)
    assert bound.binding.copies == 0  # on the CPU nothing crosses to a device


def test_io_binding_never_writes_into_the_callers_arrays(cnn_files) -> None:
    bound = OnnxRuntimeBackend(cnn_files["onnx"], None, 1, io_binding=True)
    first, second = _batches()[1:3]  # same shape: the second is copied into the first's buffer
    kept = first.copy()
    bound.run(first)
    bound.run(second)
    np.testing.assert_array_equal(first, kept)


def test_gpu_id_past_the_last_device_is_an_error(monkeypatch: pytest.MonkeyPatch, cnn_files) -> None:
    monkeypatch.setattr(devices, "visible_cuda_devices", lambda: 1)
    assert checked_gpu_id(None) is None and checked_gpu_id("0") == 0
    with pytest.raises(DeviceError, match="given GPU 1, but this process sees 1 CUDA device"):
        checked_gpu_id(1)
    for backend in (OnnxRuntimeBackend, TorchScriptBackend):
        with pytest.raises(DeviceError, match="number_of_gpu"):
            backend(cnn_files["onnx" if backend is OnnxRuntimeBackend else "ts"], 1, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_a_gpu_the_runtime_cannot_use_is_said_in_a_warning(cnn_files, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ts = TorchScriptBackend(cnn_files["ts"], 0, 1)
        ort = OnnxRuntimeBackend(cnn_files["onnx"], 0, 1)
    assert ts.device.type == "cpu" and ort.provider == "CPUExecutionProvider"
    assert "GPU 0 was assigned to this worker but torch" in caplog.text
    assert "GPU 0 was assigned to this worker but ONNX Runtime runs on CPUExecutionProvider" in caplog.text
    assert "onnxruntime-gpu" in caplog.text


def test_fp16_torchscript_takes_float32_batches_and_answers_float32(cnn_files) -> None:
    fp32 = TorchScriptBackend(cnn_files["ts"], None, 1)
    fp16 = TorchScriptBackend(cnn_files["ts_fp16"], None, 1)
    assert fp16.input_dtype == torch.float16 and "float16" in fp16.describe()
    batch = _batches()[3]
    half, full = fp16.run(batch), fp32.run(batch)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, rtol=1e-2, atol=1e-2)


def test_quantized_torchscript_is_recognised(cnn_files) -> None:
    assert is_quantized(torch.jit.load(str(cnn_files["ts_int8"])))
    assert not is_quantized(torch.jit.load(str(cnn_files["ts"])))
    assert module_dtype(torch.jit.load(str(cnn_files["ts_int8"]))) == torch.float32


def test_a_batch_takes_the_smallest_captured_size_that_holds_it() -> None:
    assert [bucket_for(n, (8, 64)) for n in (1, 8, 9, 64, 65)] == [8, 8, 64, 64, None]
    staging = np.full((4, 2), 7.0, np.float32)
    assert padded(np.ones((2, 2), np.float32), staging).tolist() == [[1, 1], [1, 1], [0, 0], [0, 0]]


def test_cuda_graph_sizes_come_from_model_config_and_are_ignored_on_cpu(cnn_files) -> None:
    section = {"input": {"name": "image", "shape": [1, 8, 8]}, "cuda_graph_batch_sizes": [16, 64]}
    assert HandlerConfig.from_model_yaml({"handler": section}).cuda_graph_batch_sizes == (16, 64)
    with pytest.raises(ConfigError, match="cuda_graph_batch_sizes must be positive"):
        HandlerConfig.from_model_yaml({"handler": {**section, "cuda_graph_batch_sizes": [0]}})
    ts = load_backend(cnn_files["ts"], None, 1, (16, 64))
    ort = load_backend(cnn_files["onnx"], None, 1, (16, 64))
    assert ts.graphs is None and ort.binding is None and "CUDA graphs" not in ts.describe() + ort.describe()
