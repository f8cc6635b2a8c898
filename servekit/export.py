"""Export a model to TorchScript and ONNX (dynamic batch axis), each proven against eager PyTorch."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from handlers.backends.torchscript import module_dtype
from servekit import validate

ONNX_OPSET = 17
TORCHSCRIPT_FILE = "model.pt"
ONNX_FILE = "model.onnx"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"


@dataclass(frozen=True)
class ExportSpec:
    """The export contract: input name and per-instance shape, output name, opset."""

    input_name: str
    input_shape: tuple[int, ...]
    output_name: str = OUTPUT_NAME
    opset: int = ONNX_OPSET

    def example(self, batch_size: int = 2) -> torch.Tensor:
        """A dummy batch to trace with (batch > 1 so nothing specializes on 1)."""
        return torch.zeros(batch_size, *self.input_shape)


def export_torchscript(model: nn.Module, spec: ExportSpec, path: Path) -> Path:
    """Trace ``model`` (works for any module without data-dependent control flow).

    The example batch takes the model's own precision, so an FP16 (``.half()``) model traces too.
    """
    model.eval()
    with torch.inference_mode():
        traced = torch.jit.trace(model, spec.example().to(module_dtype(model)), check_trace=False)
    traced.save(str(path))
    return path


def export_onnx(model: nn.Module, spec: ExportSpec, path: Path) -> Path:
    """Legacy (non-dynamo) exporter, named input/output, batch axis dynamic on both."""
    model.eval()
    with warnings.catch_warnings():
        # We choose the legacy exporter on purpose (no onnxscript dependency); don't alarm users.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        _legacy_onnx_export(model, spec, path)
    return path


def _legacy_onnx_export(model: nn.Module, spec: ExportSpec, path: Path) -> None:
    torch.onnx.export(
        model,
        (spec.example(),),
        str(path),
        input_names=[spec.input_name],
        output_names=[spec.output_name],
        dynamic_axes={spec.input_name: {0: BATCH_AXIS}, spec.output_name: {0: BATCH_AXIS}},
        opset_version=spec.opset,
        dynamo=False,
    )


FORMATS = ("torchscript", "onnx")


def export_and_validate(model: nn.Module, spec: ExportSpec, out_dir: Path, heldout: np.ndarray,
                        rtol: float = validate.DEFAULT_RTOL, atol: float = validate.DEFAULT_ATOL,
                        formats: tuple[str, ...] = FORMATS) -> dict[str, list[validate.Comparison]]:
    """Write model.pt and/or model.onnx into ``out_dir``; raise ExportValidationError if one drifts."""
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats}")
    out_dir.mkdir(parents=True, exist_ok=True)
    heldout = heldout.reshape(-1, *spec.input_shape).astype(np.float32)
    results = {}
    if "torchscript" in formats:
        ts_path = export_torchscript(model, spec, out_dir / TORCHSCRIPT_FILE)
        results["torchscript"] = validate.validate_artifact(model, "torchscript", validate.torchscript_runner(ts_path),
                                                            heldout, rtol=rtol, atol=atol)
    if "onnx" in formats:
        onnx_path = export_onnx(model, spec, out_dir / ONNX_FILE)
        validate.check_onnx_model(onnx_path)
        results["onnx"] = validate.validate_artifact(model, "onnx", validate.onnx_runner(onnx_path),
                                                     heldout, rtol=rtol, atol=atol)
    return results
