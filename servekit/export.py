"""Export a model to TorchScript and ONNX (dynamic batch and declared dynamic dimensions), each proven
against eager PyTorch."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from handlers.signature import InputSpec, Range, Signature, axis_name
from servekit import validate

ONNX_OPSET = 17
TORCHSCRIPT_FILE = "model.pt"
ONNX_FILE = "model.onnx"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"
TRACE_BATCH = 2


@dataclass(frozen=True)
class ExportSpec:
    """The export contract: the model's signature (named inputs, dynamic dimensions, outputs) and opset.

    ``ExportSpec("image", (8, 8))`` still describes a one-input model answering ``logits``.
    """

    input_name: str = ""
    input_shape: tuple[int, ...] = ()
    output_name: str = OUTPUT_NAME
    opset: int = ONNX_OPSET
    signature: Signature | None = None

    def __post_init__(self) -> None:
        if self.signature is None:
            object.__setattr__(self, "signature",
                               Signature((InputSpec(self.input_name, self.input_shape),), (self.output_name,)))
        else:
            first = self.signature.inputs[0]
            object.__setattr__(self, "input_name", first.name)
            object.__setattr__(self, "input_shape", first.fixed_shape())
            object.__setattr__(self, "output_name", self.signature.outputs[0])

    @classmethod
    def of(cls, signature: Signature, opset: int = ONNX_OPSET) -> ExportSpec:
        """The spec of any signature."""
        return cls(opset=opset, signature=signature)

    def trace_length(self) -> int | None:
        """The length every dynamic dimension has while tracing: a middle one, never the batch size."""
        lengths = self.signature.lengths()
        if not lengths:
            return None
        middle = lengths[len(lengths) // 2]
        return middle + 1 if middle == TRACE_BATCH and middle + 1 <= lengths[-1] else middle

    def example(self, batch_size: int = TRACE_BATCH) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """A dummy batch to trace with (batch > 1 so nothing specializes on 1); a tuple for several inputs."""
        length = self.trace_length()
        tensors = tuple(_example_tensor(spec, batch_size, length) for spec in self.signature.inputs)
        return tensors[0] if len(tensors) == 1 else tensors

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes: batch on every input and output, plus each declared dynamic dimension."""
        axes = {spec.name: {0: BATCH_AXIS, **{pos + 1: axis_name(pos) for pos, dim in enumerate(spec.shape)
                                              if isinstance(dim, Range)}} for spec in self.signature.inputs}
        axes.update({name: {0: BATCH_AXIS} for name in self.signature.outputs})
        return axes


def _example_tensor(spec: InputSpec, batch_size: int, length: int | None) -> torch.Tensor:
    """Zeros for float inputs (as before); the smallest allowed value for integer ones."""
    shape = (batch_size, *spec.fixed_shape(length))
    if np.dtype(spec.dtype).kind == "f":
        return torch.zeros(shape, dtype=getattr(torch, spec.dtype))
    fill = int(spec.min_value) if spec.min_value is not None else 0
    return torch.full(shape, fill, dtype=getattr(torch, spec.dtype))


def export_torchscript(model: nn.Module, spec: ExportSpec, path: Path) -> Path:
    """Trace ``model`` (works for any module without data-dependent control flow)."""
    model.eval()
    with torch.inference_mode():
        traced = torch.jit.trace(model, spec.example(), check_trace=False)
    traced.save(str(path))
    return path


def export_onnx(model: nn.Module, spec: ExportSpec, path: Path) -> Path:
    """Legacy (non-dynamo) exporter, named inputs/outputs, batch and declared dynamic dimensions dynamic."""
    model.eval()
    with warnings.catch_warnings():
        # We choose the legacy exporter on purpose (no onnxscript dependency); don't alarm users.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        _legacy_onnx_export(model, spec, path)
    return path


def _legacy_onnx_export(model: nn.Module, spec: ExportSpec, path: Path) -> None:
    example = spec.example()
    torch.onnx.export(
        model,
        example if isinstance(example, tuple) else (example,),
        str(path),
        input_names=list(spec.signature.names),
        output_names=list(spec.signature.outputs),
        dynamic_axes=spec.dynamic_axes(),
        opset_version=spec.opset,
        dynamo=False,
    )


FORMATS = ("torchscript", "onnx")


def export_and_validate(model: nn.Module, spec: ExportSpec, out_dir: Path, heldout: np.ndarray | dict[str, np.ndarray],
                        rtol: float = validate.DEFAULT_RTOL, atol: float = validate.DEFAULT_ATOL,
                        formats: tuple[str, ...] = FORMATS) -> dict[str, list[validate.Comparison]]:
    """Write model.pt and/or model.onnx into ``out_dir``; raise ExportValidationError if one drifts.

    ``heldout``: one array for a one-input model, else one array per input name (see ``validate``).
    """
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(heldout, np.ndarray):
        heldout = {spec.input_name: heldout.reshape(-1, *spec.input_shape).astype(np.float32)}
    results = {}
    if "torchscript" in formats:
        ts_path = export_torchscript(model, spec, out_dir / TORCHSCRIPT_FILE)
        results["torchscript"] = validate.validate_artifact(model, "torchscript", validate.torchscript_runner(ts_path),
                                                            heldout, rtol=rtol, atol=atol, signature=spec.signature)
    if "onnx" in formats:
        onnx_path = export_onnx(model, spec, out_dir / ONNX_FILE)
        validate.check_onnx_model(onnx_path)
        results["onnx"] = validate.validate_artifact(model, "onnx", validate.onnx_runner(onnx_path, spec.signature.names),
                                                     heldout, rtol=rtol, atol=atol, signature=spec.signature)
    return results
