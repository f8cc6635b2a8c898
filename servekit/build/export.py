"""Export a model to TorchScript, ONNX and AOTInductor (dynamic batch and declared dynamic dimensions),
each proven against eager PyTorch."""
from __future__ import annotations

import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from handlers.backends.torchscript import module_dtype
from handlers.signature import InputSpec, Range, Signature, axis_name
from servekit.build import validate
from servekit.build.defaults import FORMATS, OUTPUT_NAME
from servekit.build.deprecations import quiet_inductor, quiet_torchscript

ONNX_OPSET = 17
TORCHSCRIPT_FILE = "model.pt"
ONNX_FILE = "model.onnx"
AOTI_FILE = "model.pt2"
BATCH_AXIS = "batch"
# Kernels read the thread count when they run, so the worker's handler.threads applies; without it
# AOTInductor bakes the compiling machine's count into every parallel loop. Freezing folds weights
# into constants that oneDNN prepacks: PT2E INT8 needs it (it lowers Q/DQ pairs to INT8 kernels).
# For FP32, measured side by side at 1 thread: the 3x64x64 CNN ran 1.5x faster at batch 1 and 1.4x at
# batch 32 (equal at 16), while the tiny digits models pay a fixed ~0.03 ms per call (3x at batch 1).
AOTI_CONFIGS: dict[str, Any] = {"cpp.dynamic_threads": True, "freezing": True}
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
    # Real inputs to trace with, by input name ([>= TRACE_BATCH, ...] at the trace length): a model whose code
    # branches on values (an attention mask with or without padding) is traced on the branch it will serve.
    examples: Mapping[str, np.ndarray] | None = field(default=None, compare=False)

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
    def of(cls, signature: Signature, opset: int = ONNX_OPSET,
           examples: Mapping[str, np.ndarray] | None = None) -> ExportSpec:
        """The spec of any signature (``examples``: real inputs to trace with)."""
        return cls(opset=opset, signature=signature, examples=examples)

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
        if self.examples is not None and all(len(self.examples[s.name]) >= batch_size for s in self.signature.inputs):
            tensors = tuple(torch.from_numpy(np.ascontiguousarray(self.examples[s.name][:batch_size], dtype=s.dtype))
                            for s in self.signature.inputs)
            return tensors[0] if len(tensors) == 1 else tensors
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


class ExportUnsupported(RuntimeError):
    """torch.export cannot capture the model; the message carries torch's reason."""


def export_torchscript(model: nn.Module, spec: ExportSpec, path: Path) -> Path:
    """Trace ``model`` (works for any module without data-dependent control flow).

    The example batch takes the model's own precision, so an FP16 (``.half()``) model traces too.
    """
    model.eval()
    with torch.inference_mode(), quiet_torchscript():
        traced = torch.jit.trace(model, _in_precision(spec.example(), module_dtype(model)), check_trace=False)
        traced.save(str(path))
    return path


def _in_precision(example: torch.Tensor | tuple[torch.Tensor, ...], dtype: torch.dtype
                  ) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Floating example inputs in the model's precision (an FP16 model traces with FP16); ids unchanged."""
    cast = tuple(t.to(dtype) if t.is_floating_point() else t for t in (example if isinstance(example, tuple) else (example,)))
    return cast if isinstance(example, tuple) else cast[0]


def capture(model: nn.Module, spec: ExportSpec) -> torch.export.ExportedProgram:
    """torch.export with the batch axis and every declared dynamic dimension as a ``Dim``; ExportUnsupported
    with torch's reason if it cannot."""
    model.eval()
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    lengths = {pos: torch.export.Dim(axis_name(pos), min=dim.low, max=dim.high)
               for spec_in in spec.signature.inputs for pos, dim in enumerate(spec_in.shape) if isinstance(dim, Range)}
    example = spec.example()
    device = next(model.parameters(), torch.empty(0)).device  # a CUDA model compiles for CUDA
    inputs = tuple(t.to(device) for t in (example if isinstance(example, tuple) else (example,)))
    dynamic = tuple({0: batch, **{pos + 1: lengths[pos] for pos, dim in enumerate(spec_in.shape) if isinstance(dim, Range)}}
                    for spec_in in spec.signature.inputs)
    try:
        with torch.no_grad():
            return torch.export.export(model, inputs, dynamic_shapes=dynamic)
    except Exception as err:  # torch.export raises many unrelated types (UserError, GuardOnDataDependentSymNode, ...)
        raise ExportUnsupported(f"torch.export cannot capture the model: {_torch_reason(err)}") from err


def _torch_reason(err: Exception) -> str:
    """The first lines of torch's message, and the line of model code it points at."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = " ".join(lines[:2]) if lines else type(err).__name__
    where = re.search(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.+)', text)
    if where:
        reason += f" (at {Path(where[1]).name}:{where[2]} in {where[3]}: {where[4].strip()})"
    return f"{type(err).__name__}: {reason}"


def compile_aoti(program: torch.export.ExportedProgram, path: Path, configs: dict[str, Any] | None = None) -> Path:
    """AOTInductor: compile an exported program into a self-contained ``.pt2`` package (C++ compiler needed)."""
    # Inductor freezes (and so lowers INT8) only with autograd off.
    with quiet_inductor(), torch.no_grad():
        torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                 inductor_configs={**AOTI_CONFIGS, **(configs or {})})
    return path


def missing_cpp_compiler() -> str | None:
    """Why AOTInductor cannot compile here (no C++ compiler where Inductor looks: $CXX, else g++), or None."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler):
        return None
    return (f"no C++ compiler: AOTInductor compiles with {compiler!r} ($CXX, else g++), which is not on PATH; "
            "install one (Debian: apt-get install g++) or leave model.pt2 out with --formats torchscript,onnx")


def export_aoti(model: nn.Module, spec: ExportSpec, path: Path) -> Path:
    """torch.export (dynamic batch) then AOTInductor; raises ExportUnsupported if torch.export cannot capture."""
    return compile_aoti(capture(model, spec), path)


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




@dataclass
class Exported:
    """Each written format's comparisons with eager PyTorch, and the formats torch could not capture (why)."""

    comparisons: dict[str, list[validate.Comparison]] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)


def export_and_validate(model: nn.Module, spec: ExportSpec, out_dir: Path, heldout: np.ndarray | dict[str, np.ndarray],
                        rtol: float = validate.DEFAULT_RTOL, atol: float = validate.DEFAULT_ATOL,
                        formats: tuple[str, ...] = FORMATS,
                        progress: Callable[[str], None] = lambda _: None) -> Exported:
    """Write model.pt, model.onnx and/or model.pt2 into ``out_dir``; raise ExportValidationError if one drifts.

    ``heldout``: one array for a one-input model, else one array per input name (see ``validate``).
    A model torch.export cannot capture gets no model.pt2; the reason is in ``unsupported`` and the
    other formats are still built.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(heldout, np.ndarray):
        heldout = {spec.input_name: heldout.reshape(-1, *spec.input_shape).astype(np.float32)}
    exported = Exported()
    results = exported.comparisons
    if "torchscript" in formats:
        ts_path = export_torchscript(model, spec, out_dir / TORCHSCRIPT_FILE)
        results["torchscript"] = validate.validate_artifact(model, "torchscript", validate.torchscript_runner(ts_path),
                                                            heldout, rtol=rtol, atol=atol, signature=spec.signature)
    if "onnx" in formats:
        onnx_path = export_onnx(model, spec, out_dir / ONNX_FILE)
        validate.check_onnx_model(onnx_path)
        results["onnx"] = validate.validate_artifact(model, "onnx", validate.onnx_runner(onnx_path, spec.signature.names),
                                                     heldout, rtol=rtol, atol=atol, signature=spec.signature)
    if "aoti" in formats:
        aoti_path = out_dir / AOTI_FILE
        aoti_path.unlink(missing_ok=True)  # a stale package must not outlive a model that no longer exports
        try:
            program = capture(model, spec)
        except ExportUnsupported as err:
            exported.unsupported["aoti"] = str(err)
            return exported
        no_compiler = missing_cpp_compiler()
        if no_compiler:
            exported.unsupported["aoti"] = no_compiler
            return exported
        progress(f"compiling {AOTI_FILE} with AOTInductor (10-30 s on 2 cores)")
        compile_aoti(program, aoti_path)
        results["aoti"] = validate.validate_artifact(model, "aoti", validate.aoti_runner(aoti_path),
                                                     heldout, rtol=rtol, atol=atol, signature=spec.signature)
    return exported
