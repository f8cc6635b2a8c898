"""Prove an export: ONNX checker, then outputs vs eager PyTorch on held-out data at several batch sizes."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from handlers.backends.torchscript import module_dtype

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-5
DEFAULT_BATCH_SIZES = (1, 7, 64)


@dataclass(frozen=True)
class Comparison:
    """How far one artifact's outputs are from eager PyTorch at one batch size."""

    artifact: str
    batch_size: int
    max_abs_diff: float
    max_rel_diff: float
    passed: bool
    problem: str = ""

    def describe(self) -> str:
        """One line for the console."""
        verdict = "ok" if self.passed else f"FAILED{': ' + self.problem if self.problem else ''}"
        return (f"{self.artifact:<12} batch {self.batch_size:>3}: max |diff| {self.max_abs_diff:.3e}, "
                f"max rel {self.max_rel_diff:.3e} -> {verdict}")


class ExportValidationError(RuntimeError):
    """An export does not reproduce the model; carries every failing comparison."""

    def __init__(self, failures: Sequence[Comparison], rtol: float, atol: float,
                 comparisons: Sequence[Comparison] = ()) -> None:
        self.failures = list(failures)
        self.comparisons = list(comparisons) or self.failures  # every batch size, passed or not
        lines = "\n  ".join(f.describe() for f in failures)
        super().__init__(f"export validation failed (rtol={rtol:g}, atol={atol:g}):\n  {lines}")


def compare(artifact: str, batch_size: int, expected: np.ndarray, actual: np.ndarray,
            rtol: float, atol: float) -> Comparison:
    """Compare like ``np.allclose(actual, expected, rtol, atol)`` and keep the worst differences."""
    if expected.shape != actual.shape:
        return Comparison(artifact, batch_size, float("inf"), float("inf"), False,
                          f"output shape {list(actual.shape)}, expected {list(expected.shape)}")
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    rel = diff / np.maximum(np.abs(expected.astype(np.float64)), np.finfo(np.float32).tiny)
    passed = bool(np.all(diff <= atol + rtol * np.abs(expected)))
    return Comparison(artifact, batch_size, float(diff.max()), float(rel.max()), passed)


def check_onnx_model(path: Path) -> None:
    """``onnx.checker.check_model`` with full checks; raises on an invalid graph."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A CPU ONNX Runtime session as a function of one input batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def torchscript_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A loaded TorchScript module as a function of one input batch (cast to the module's precision)."""
    from servekit.deprecations import quiet_torchscript

    with quiet_torchscript():
        module = torch.jit.load(str(path), map_location="cpu").eval()
    dtype = module_dtype(module)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch).to(dtype)).float().numpy()

    return run


def aoti_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A loaded AOTInductor package (CPU) as a function of one input batch."""
    package = torch._inductor.aoti_load_package(str(path))

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return package(torch.from_numpy(batch)).numpy()

    return run


def validate_artifact(model: nn.Module, artifact: str, runner: Callable[[np.ndarray], np.ndarray],
                      heldout: np.ndarray, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                      rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> list[Comparison]:
    """Run eager and exported model on the first N held-out inputs for each N; raise on any mismatch."""
    model.eval()
    results = []
    for batch_size in batch_sizes:
        if batch_size > len(heldout):
            raise ValueError(f"need {batch_size} held-out inputs to validate, have {len(heldout)}")
        batch = np.ascontiguousarray(heldout[:batch_size])
        with torch.inference_mode():
            expected = model(torch.from_numpy(batch)).numpy()
        results.append(compare(artifact, batch_size, expected, np.asarray(runner(batch)), rtol, atol))
    failures = [r for r in results if not r.passed]
    if failures:
        raise ExportValidationError(failures, rtol, atol, results)
    return results


def comparisons_as_json(results: Sequence[Comparison]) -> list[dict]:
    """For validation.json."""
    return [asdict(r) for r in results]
