"""Prove an export: ONNX checker, then outputs vs eager PyTorch on held-out data at several batch sizes."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from handlers.backends.torchscript import module_dtype
from handlers.signature import Range, Signature
from servekit.build.defaults import DEFAULT_ATOL, DEFAULT_RTOL

DEFAULT_BATCH_SIZES = (1, 7, 64)
PADDING_SEED = 0  # which instances of a validation batch are shorter (padded), fixed for reproducibility
PADDING_CHECK_INSTANCES = 8  # instances checked alone against padded in one batch
Runner = Callable[..., "np.ndarray | Sequence[np.ndarray]"]  # runner(*input arrays) -> output(s)


@dataclass(frozen=True)
class Comparison:
    """How far one artifact's outputs are from eager PyTorch at one batch size (and length, when dynamic)."""

    artifact: str
    batch_size: int
    max_abs_diff: float
    max_rel_diff: float
    passed: bool
    problem: str = ""
    length: int | None = None  # the longest instance of the batch on its dynamic dimensions

    def describe(self) -> str:
        """One line for the console."""
        verdict = "ok" if self.passed else f"FAILED{': ' + self.problem if self.problem else ''}"
        length = "" if self.length is None else f" length {self.length:>4}"
        return (f"{self.artifact:<12} batch {self.batch_size:>3}{length}: max |diff| {self.max_abs_diff:.3e}, "
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


def onnx_runner(path: Path, input_names: Sequence[str] | None = None) -> Runner:
    """A CPU ONNX Runtime session as a function of its input batches, positionally in ``input_names`` order
    (default: the graph's). One output comes back as an array, several as a list."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in session.get_inputs()]
    names = list(input_names or graph_inputs)

    def run(*arrays: np.ndarray) -> np.ndarray | list[np.ndarray]:
        # An input the exporter dropped (the model never reads it) is not fed.
        outputs = session.run(None, {n: a for n, a in zip(names, arrays) if n in graph_inputs})
        return outputs[0] if len(outputs) == 1 else outputs

    return run


def torchscript_runner(path: Path) -> Runner:
    """A loaded TorchScript module as a function of its input batches (floats cast to its precision)."""
    from servekit.build.deprecations import quiet_torchscript

    with quiet_torchscript():
        module = torch.jit.load(str(path), map_location="cpu").eval()
    return eager_runner(module, module_dtype(module))


def aoti_runner(path: Path) -> Runner:
    """A loaded AOTInductor package (CPU) as a function of its input batches."""
    return eager_runner(torch._inductor.aoti_load_package(str(path)))


def eager_runner(model: Callable, float_dtype: torch.dtype = torch.float32) -> Runner:
    """A module (eager, TorchScript or AOTInductor) as a function of numpy input batches; several outputs
    as a list. Floating inputs take ``float_dtype`` (an FP16 model's), and outputs come back as float32."""
    def run(*arrays: np.ndarray) -> np.ndarray | list[np.ndarray]:
        tensors = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
        with torch.inference_mode():
            output = model(*(t.to(float_dtype) if t.is_floating_point() else t for t in tensors))
        if isinstance(output, torch.Tensor):
            return _host(output)
        outputs = list(output.values()) if isinstance(output, dict) else list(output)
        return [_host(o) for o in outputs] if len(outputs) > 1 else _host(outputs[0])

    return run


def _host(tensor: torch.Tensor) -> np.ndarray:
    return tensor.float().numpy() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor.numpy()


def validation_batch(heldout: Mapping[str, np.ndarray], signature: Signature, batch_size: int,
                     length: int | None) -> list[np.ndarray]:
    """The first ``batch_size`` held-out instances, in signature order, cut to ``length`` on dynamic
    dimensions. With several instances, all but the first are shorter (``real_lengths``) and padded with
    each input's pad value, the way the handler pads a shared batch."""
    arrays = []
    for spec in signature.inputs:
        array = np.array(heldout[spec.name][:batch_size], dtype=spec.dtype)
        if length is not None:
            array = array[(slice(None), *(slice(0, length) if isinstance(d, Range) else slice(None) for d in spec.shape))]
            short = [(0, 0)] + [(0, length - size) if isinstance(d, Range) else (0, 0)
                                for size, d in zip(array.shape[1:], spec.shape)]
            if any(after for _, after in short):  # held-out data shorter than the length under test
                array = np.pad(array, short, constant_values=spec.pad_value)
        arrays.append(np.ascontiguousarray(array))
    if length is None or batch_size == 1:
        return arrays
    real = real_lengths(signature, batch_size, length)
    for spec, array in zip(signature.inputs, arrays):
        for position, dim in enumerate(spec.shape):
            if isinstance(dim, Range):
                for row, keep in enumerate(real):
                    index = [row] + [slice(None)] * len(spec.shape)
                    index[position + 1] = slice(int(keep), None)
                    array[tuple(index)] = spec.pad_value
    return arrays


def real_lengths(signature: Signature, batch_size: int, length: int) -> np.ndarray:
    """How long each instance of a padded validation batch really is: the first ``length``, the rest shorter."""
    lows = [d.low for spec in signature.inputs for d in spec.shape if isinstance(d, Range)]
    rng = np.random.default_rng(PADDING_SEED)
    real = rng.integers(max(lows), length + 1, size=batch_size)
    real[0] = length  # the longest instance sets the batch's length
    return real


@dataclass(frozen=True)
class PaddingCheck:
    """Whether every instance answers the same padded inside a mixed-length batch as it does alone."""

    invariant: bool
    max_abs_diff: float
    instances: int
    longest: int

    def describe(self) -> str:
        """One line for the console."""
        if self.invariant:
            return (f"padding      {self.instances} instances answer the same alone as padded to {self.longest} in "
                    f"one batch (max |diff| {self.max_abs_diff:.1e}) -> ok")
        return (f"padding changes this model's answers (max |diff| {self.max_abs_diff:.1e} between an instance alone "
                f"and padded to {self.longest}): it will be served in sub-batches of equal length only")


def check_padding_invariance(runner: Runner, heldout: Mapping[str, np.ndarray], signature: Signature,
                             rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                             instances: int = PADDING_CHECK_INSTANCES) -> PaddingCheck | None:
    """Each instance alone, cut to its own length, against the same instance inside a batch of mixed lengths
    padded to the longest declared length with each input's pad value (as the handler pads). Validation
    compares an export with eager PyTorch on the *same* padded batch, so it cannot see a model without a
    mask whose answers depend on its batch-mates; this can. None when no dimension is dynamic."""
    lengths = signature.lengths()
    if not lengths:
        return None
    count = min(instances, min(len(array) for array in heldout.values()))
    longest = lengths[-1]
    batch = validation_batch(heldout, signature, count, longest)
    together = _outputs(runner(*batch))
    worst, invariant = 0.0, True
    for row, keep in enumerate(real_lengths(signature, count, longest)):
        alone = [_cut(array[row:row + 1], spec, int(keep)) for spec, array in zip(signature.inputs, batch)]
        for expected, padded in zip(_outputs(runner(*alone)), together):
            actual = padded[row:row + 1][tuple(slice(0, size) for size in expected.shape)]  # per-token outputs: real part
            diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
            worst = max(worst, float(diff.max()))
            invariant &= bool(np.all(diff <= atol + rtol * np.abs(expected)))
    return PaddingCheck(invariant, worst, count, longest)


def _cut(array: np.ndarray, spec, length: int) -> np.ndarray:
    index = (slice(None), *(slice(0, length) if isinstance(d, Range) else slice(None) for d in spec.shape))
    return np.ascontiguousarray(array[index])


def validate_artifact(model: nn.Module, artifact: str, runner: Runner, heldout: np.ndarray | Mapping[str, np.ndarray],
                      batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, rtol: float = DEFAULT_RTOL,
                      atol: float = DEFAULT_ATOL, signature: Signature | None = None) -> list[Comparison]:
    """Run eager and exported model on the first N held-out inputs for each N; raise on any mismatch.

    With a signature holding dynamic dimensions, every batch size runs at the shortest, a middle and
    the longest declared length, with padding present; every failing case is reported.
    """
    model.eval()
    if isinstance(heldout, np.ndarray):
        first = signature.inputs[0].name if signature is not None else "input"
        heldout = {first: heldout}
    if signature is None:
        from handlers.signature import InputSpec

        (name, array), = heldout.items()
        signature = Signature((InputSpec(name, array.shape[1:], str(array.dtype)),))
    expected_run = eager_runner(model)
    results = []
    for length in signature.lengths() or (None,):
        for batch_size in batch_sizes:
            available = min(len(array) for array in heldout.values())
            if batch_size > available:
                raise ValueError(f"need {batch_size} held-out inputs to validate, have {available}")
            batch = validation_batch(heldout, signature, batch_size, length)
            expected, actual = _outputs(expected_run(*batch)), _outputs(runner(*batch))
            results.append(_compare_all(artifact, batch_size, length, expected, actual, rtol, atol))
    failures = [r for r in results if not r.passed]
    if failures:
        raise ExportValidationError(failures, rtol, atol, results)
    return results


def _outputs(result: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(result)] if isinstance(result, np.ndarray) else [np.asarray(r) for r in result]


def _compare_all(artifact: str, batch_size: int, length: int | None, expected: list[np.ndarray],
                 actual: list[np.ndarray], rtol: float, atol: float) -> Comparison:
    """Every output compared; the worst differences kept."""
    if len(expected) != len(actual):
        return Comparison(artifact, batch_size, float("inf"), float("inf"), False,
                          f"{len(actual)} outputs, expected {len(expected)}", length)
    each = [compare(artifact, batch_size, e, a, rtol, atol) for e, a in zip(expected, actual)]
    problems = "; ".join(c.problem for c in each if c.problem)
    return Comparison(artifact, batch_size, max(c.max_abs_diff for c in each), max(c.max_rel_diff for c in each),
                      all(c.passed for c in each), problems, length)


def comparisons_as_json(results: Sequence[Comparison]) -> list[dict]:
    """For validation.json."""
    return [asdict(r) for r in results]
