"""Optimized variants of a model, each proven against FP32 and gated before archiving.

Variants are grouped into families, one directory each (``build/<model>_<family>/``) holding that
family's ``model.pt``, ``model.onnx`` and/or ``model.pt2`` plus the model's ``model-config.yaml``, so
archive.sh turns them into ``<model>_<family>_ts.mar`` / ``_onnx.mar`` / ``_aoti.mar``.

Each variant is built on its own: one that cannot be built (a conversion torch or torchao refuses for
this model) is a rejected result with its reason, never the end of the run. Families are built in a
staging folder beside them and moved into place only once judged and sealed, so an interrupted run
leaves no half-built family for archive.sh to trip on. A classifier's variants are gated on accuracy
and top-1 agreement with FP32; any other task's on how far its outputs are from FP32's (worst error
relative to FP32's largest value, and R^2).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from handlers.config import CLASSIFICATION
from servekit.build import validate
from servekit.build.defaults import MAX_ACCURACY_DROP, MAX_RELATIVE_ERROR, MIN_AGREEMENT, MIN_R2
from servekit.build.model_dir import TOKENIZER_FILE, seal
from servekit.build.export import (AOTI_FILE, ONNX_FILE, TORCHSCRIPT_FILE, ExportSpec, capture, compile_aoti, export_onnx,
                                   export_torchscript)
from servekit.build.model_config import MODEL_CONFIG_FILE
from servekit.build.optimize import prune, quantize

# Output tolerances per kind of variant, stated in the report. A variant is compared with its own
# eager PyTorch model where one exists (then the foundation tolerance applies); ONNX Runtime's
# INT8 and FP16 conversions have no eager twin, and an FP16 model's whole point is to differ from
# FP32 a little: those are compared with FP32 at looser bounds.
EXACT = (validate.DEFAULT_RTOL, validate.DEFAULT_ATOL)
FP16_TOLERANCE = (1e-2, 1e-2)
INT8_TOLERANCE = (0.1, 0.5)
# PT2E INT8 has an eager twin (the Q/DQ module), but Inductor's fused oneDNN INT8 kernels requantize in
# another order than the twin's separate Q and DQ steps: one quantization step of a logit at worst.
PT2E_TWIN_TOLERANCE = (1e-2, 1e-2)
FORMAT_BY_SUFFIX = {".pt": "torchscript", ".onnx": "onnx", ".pt2": "aoti"}
ARCHIVE_SUFFIX = {"torchscript": "ts", "onnx": "onnx", "aoti": "aoti"}  # archive.sh's <dir>_<suffix>.mar
STAGING_PREFIX = "."  # archive.sh's build/*/ glob skips dot folders


@dataclass(frozen=True)
class Gates:
    """A classifier's variant is served only if it loses at most ``max_accuracy_drop`` points and agrees
    enough; any other task's only if its outputs stay within ``max_relative_error`` of FP32's largest value
    and explain at least ``min_r2`` of FP32's variance."""

    max_accuracy_drop: float = MAX_ACCURACY_DROP
    min_agreement: float = MIN_AGREEMENT
    max_relative_error: float = MAX_RELATIVE_ERROR
    min_r2: float = MIN_R2


@dataclass
class VariantResult:
    """One variant's artifact, accuracy figures, output check and gate verdict."""

    model: str
    variant: str
    family: str
    fmt: str
    path: Path
    reference: str
    rtol: float
    atol: float
    accuracy: float | None = 0.0  # None for a task without classes
    agreement: float | None = 0.0
    max_abs_diff_vs_fp32: float = 0.0
    output_check: list[validate.Comparison] = field(default_factory=list)
    passed: bool = False
    reason: str = ""
    sparsity: float | None = None
    sparsity_per_layer: dict[str, float] | None = None
    relative_error: float | None = None  # non-classification tasks: worst |variant - FP32| / max |FP32|
    r2: float | None = None  # non-classification tasks: R^2 of the variant's outputs against FP32's


@dataclass(frozen=True)
class VariantInputs:
    """What building variants of one model needs."""

    name: str
    model: nn.Module
    spec: ExportSpec
    base_dir: Path
    x_train: np.ndarray | dict[str, np.ndarray]  # one array, or one per input name (multi-input models)
    y_train: np.ndarray
    x_test: np.ndarray | dict[str, np.ndarray]
    y_test: np.ndarray | None  # class labels; None for a task gated on outputs alone
    task: str = CLASSIFICATION


def runner_for(path: Path, input_names: tuple[str, ...] | None = None) -> Callable[..., np.ndarray]:
    """The CPU runner for an artifact, chosen by suffix; called with the input arrays in signature order."""
    fmt = FORMAT_BY_SUFFIX[path.suffix]
    if fmt == "onnx":
        return validate.onnx_runner(path, input_names)
    return validate.aoti_runner(path) if fmt == "aoti" else validate.torchscript_runner(path)


def eager_runner(model: nn.Module) -> Callable[..., np.ndarray]:
    """An eager model as a function of numpy input batches."""
    return validate.eager_runner(model)


def input_arrays(x: np.ndarray | dict[str, np.ndarray], spec: ExportSpec) -> list[np.ndarray]:
    """The model's input arrays in signature order (one array stays one)."""
    return [x[name] for name in spec.signature.names] if isinstance(x, dict) else [x]


def staging_root(inputs: VariantInputs, out_root: Path) -> Path:
    """Where a run builds its families before they are moved into ``out_root`` (a dot folder beside them)."""
    return out_root / f"{STAGING_PREFIX}{inputs.name}.variants"


def build_variants(inputs: VariantInputs, out_root: Path, prune_amount: float = prune.DEFAULT_AMOUNT,
                   finetune_epochs: int = 0) -> list[VariantResult]:
    """Write every variant artifact into a staging folder; return one unjudged result per variant.

    A variant whose conversion raises is a failed result naming why, and the others are still built. The
    AOTInductor variants (FP32 and PT2E INT8) are built only when the base export holds a model.pt2, i.e.
    when torch.export could capture the model. ``prune_empty_family_dirs`` moves the families into place.
    """
    name, spec, base = inputs.name, inputs.spec, inputs.base_dir
    with_aoti = (base / AOTI_FILE).exists()
    families = ("int8", "pruned", "pruned_int8", "qdq", "fp16") + (("pt2e_int8",) if with_aoti else ())
    staging = staging_root(inputs, out_root)
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
    dirs = {family: staging / f"{name}_{family}" for family in families}
    for directory in dirs.values():
        directory.mkdir(parents=True)
        shutil.copy(base / MODEL_CONFIG_FILE, directory / MODEL_CONFIG_FILE)
        if (base / TOKENIZER_FILE).exists():  # a text model's variants take text too
            shutil.copy(base / TOKENIZER_FILE, directory / TOKENIZER_FILE)

    results: list[VariantResult] = []
    references: dict[str, nn.Module | None] = {"fp32": inputs.model}

    def reference(key: str, make: Callable[[], nn.Module]) -> nn.Module | None:
        """A reference model (INT8, pruned...), or None when torch cannot make it for this model."""
        try:
            references[key] = make()
        except Exception as err:  # noqa: BLE001 - the variants built on it are rejected with this reason
            references[key] = None
            reasons[key] = f"could not build the {key} model: {_reason(err)}"
        return references[key]

    reasons: dict[str, str] = {}

    def variant(name_: str, family: str, path: Path, ref: str, tolerance: tuple[float, float],
                make: Callable[[], Path]) -> None:
        """Build one variant artifact; a failure is its result's reason, never the run's end."""
        result = VariantResult(name, name_, family, FORMAT_BY_SUFFIX[path.suffix], path, ref, *tolerance)
        results.append(result)
        if references.get(ref, inputs.model) is None:
            result.reason = reasons[ref]
            return
        try:
            make()
        except Exception as err:  # noqa: BLE001 - torch/torchao/ORT raise many types for models they cannot convert
            path.unlink(missing_ok=True)
            result.reason = f"could not build: {_reason(err)}"

    finetune = None
    if finetune_epochs and isinstance(inputs.x_train, dict):
        raise ValueError("fine-tuning after pruning takes one input; this model has several")
    if finetune_epochs:
        finetune = prune.finetuner(torch.from_numpy(inputs.x_train), torch.from_numpy(inputs.y_train), finetune_epochs)
    int8 = reference("int8", lambda: quantize.torch_dynamic_int8(inputs.model))
    pruned = reference("pruned", lambda: prune.prune_global_l1(inputs.model, prune_amount, finetune))
    if pruned is not None:
        reference("pruned_int8", lambda: quantize.torch_dynamic_int8(pruned))
    else:
        references["pruned_int8"], reasons["pruned_int8"] = None, reasons["pruned"]
    half = reference("fp16", lambda: quantize.torch_fp16(inputs.model))
    calibration = dict(zip(spec.signature.names, input_arrays(inputs.x_train, spec)))

    variant("ts_fp32", "fp32", base / TORCHSCRIPT_FILE, "fp32", EXACT, lambda: base / TORCHSCRIPT_FILE)
    variant("onnx_fp32", "fp32", base / ONNX_FILE, "fp32", EXACT, lambda: base / ONNX_FILE)
    variant("ts_int8", "int8", dirs["int8"] / TORCHSCRIPT_FILE, "int8", EXACT,
            lambda: export_torchscript(int8, spec, dirs["int8"] / TORCHSCRIPT_FILE))
    variant("onnx_int8", "int8", dirs["int8"] / ONNX_FILE, "fp32", INT8_TOLERANCE,
            lambda: quantize.onnx_dynamic_int8(base / ONNX_FILE, dirs["int8"] / ONNX_FILE))
    variant("ts_pruned", "pruned", dirs["pruned"] / TORCHSCRIPT_FILE, "pruned", EXACT,
            lambda: export_torchscript(pruned, spec, dirs["pruned"] / TORCHSCRIPT_FILE))
    variant("onnx_pruned", "pruned", dirs["pruned"] / ONNX_FILE, "pruned", EXACT,
            lambda: export_onnx(pruned, spec, dirs["pruned"] / ONNX_FILE))
    variant("ts_pruned_int8", "pruned_int8", dirs["pruned_int8"] / TORCHSCRIPT_FILE, "pruned_int8", EXACT,
            lambda: export_torchscript(references["pruned_int8"], spec, dirs["pruned_int8"] / TORCHSCRIPT_FILE))
    variant("onnx_pruned_int8", "pruned_int8", dirs["pruned_int8"] / ONNX_FILE, "pruned", INT8_TOLERANCE,
            lambda: quantize.onnx_dynamic_int8(_existing(dirs["pruned"] / ONNX_FILE), dirs["pruned_int8"] / ONNX_FILE))
    variant("onnx_qdq_int8", "qdq", dirs["qdq"] / ONNX_FILE, "fp32", INT8_TOLERANCE,
            lambda: quantize.onnx_static_qdq_int8(base / ONNX_FILE, dirs["qdq"] / ONNX_FILE, calibration))
    variant("ts_fp16", "fp16", dirs["fp16"] / TORCHSCRIPT_FILE, "fp32", FP16_TOLERANCE,
            lambda: export_torchscript(half, spec, dirs["fp16"] / TORCHSCRIPT_FILE))
    variant("onnx_fp16", "fp16", dirs["fp16"] / ONNX_FILE, "fp32", FP16_TOLERANCE,
            lambda: quantize.onnx_fp16(base / ONNX_FILE, dirs["fp16"] / ONNX_FILE))
    if with_aoti:
        variant("aoti_fp32", "fp32", base / AOTI_FILE, "fp32", EXACT, lambda: base / AOTI_FILE)
        twin = reference("pt2e_int8", lambda: quantize.pt2e_int8(inputs.model, spec, calibration))
        if twin is not None:
            print("  compiling the PT2E INT8 model.pt2 with AOTInductor", flush=True)
        variant("aoti_pt2e_int8", "pt2e_int8", dirs["pt2e_int8"] / AOTI_FILE, "pt2e_int8", PT2E_TWIN_TOLERANCE,
                lambda: compile_aoti(capture(twin, spec), dirs["pt2e_int8"] / AOTI_FILE))
    measured = prune.sparsity(pruned) if pruned is not None else None
    for r in results:
        if r.family.startswith("pruned") and measured is not None:
            r.sparsity, r.sparsity_per_layer = measured.global_fraction, measured.per_layer
    for r in results:
        if not r.reason:
            _check_outputs(r, references[r.reference], inputs.x_test, spec)
    return results


def _existing(path: Path) -> Path:
    """A file another variant was to write, or the reason this one cannot be built without it."""
    if not path.exists():
        raise FileNotFoundError(f"{path.name} of {path.parent.name} was not built")
    return path


def _reason(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__


def _check_outputs(result: VariantResult, reference: nn.Module, heldout: np.ndarray | dict[str, np.ndarray],
                   spec: ExportSpec) -> None:
    """Checker (ONNX) plus output comparison with the variant's reference at batch 1, 7, 64 (and at the
    shortest, a middle and the longest length of a dynamic dimension)."""
    if result.fmt == "onnx":
        validate.check_onnx_model(result.path)
    named = heldout if isinstance(heldout, dict) else {spec.input_name: heldout}
    try:
        result.output_check = validate.validate_artifact(reference, result.variant,
                                                         runner_for(result.path, spec.signature.names), named,
                                                         rtol=result.rtol, atol=result.atol, signature=spec.signature)
    except validate.ExportValidationError as err:
        result.output_check = err.comparisons
        result.reason = f"outputs differ from {result.reference} beyond rtol={result.rtol:g}, atol={result.atol:g}"


def judge(results: list[VariantResult], fp32: nn.Module, x_test: np.ndarray | dict[str, np.ndarray],
          y_test: np.ndarray | None, gates: Gates, input_names: tuple[str, ...] | None = None,
          task: str = CLASSIFICATION) -> None:
    """Fill the quality figures and the verdict; delete the artifacts of failing variants.

    ``x_test`` holds one array, or one per input (then ``input_names`` gives their order). A classifier is
    gated on accuracy (against ``y_test``) and top-1 agreement with FP32; any other task on its outputs'
    worst error relative to FP32's largest value and their R^2 against FP32 (every output, flattened).
    """
    arrays = [x_test[name] for name in (input_names or tuple(x_test))] if isinstance(x_test, dict) else [x_test]
    fp32_outputs = _as_list(eager_runner(fp32)(*arrays))
    classifier = task == CLASSIFICATION
    if classifier:
        fp32_pred = fp32_outputs[0].argmax(axis=1)
        fp32_accuracy = float((fp32_pred == y_test).mean())
    for r in results:
        problems = [r.reason] if r.reason else []
        if not r.path.exists():  # never built: nothing to measure
            r.passed, r.reason = False, "; ".join(problems) or "no artifact"
            continue
        outputs = _as_list(runner_for(r.path, input_names)(*arrays))
        r.max_abs_diff_vs_fp32 = float(max(np.abs(o - f).max() for o, f in zip(outputs, fp32_outputs)))
        if classifier:
            predicted = outputs[0].argmax(axis=1)
            r.accuracy = float((predicted == y_test).mean())
            r.agreement = float((predicted == fp32_pred).mean())
            drop = (fp32_accuracy - r.accuracy) * 100
            if drop > gates.max_accuracy_drop:
                problems.append(f"accuracy {r.accuracy:.2%} is {drop:.2f} points below FP32 {fp32_accuracy:.2%} "
                                f"(allowed {gates.max_accuracy_drop:g})")
            if r.agreement < gates.min_agreement:
                problems.append(f"top-1 agreement with FP32 {r.agreement:.2%} < {gates.min_agreement:.0%}")
        else:
            r.accuracy = r.agreement = None  # no classes: no accuracy, no top-1 agreement
            r.relative_error, r.r2 = output_error(outputs, fp32_outputs)
            if r.relative_error > gates.max_relative_error:
                problems.append(f"worst output error {r.relative_error:.3g} of FP32's largest value > "
                                f"{gates.max_relative_error:g}")
            if r.r2 < gates.min_r2:
                problems.append(f"R^2 against FP32 {r.r2:.4f} < {gates.min_r2:g}")
        r.passed, r.reason = not problems, "; ".join(problems)
        if not r.passed and r.family != "fp32":
            r.path.unlink(missing_ok=True)


def output_error(outputs: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, float]:
    """Worst |output - reference| over the largest |reference|, and R^2 of the outputs against the
    reference (1 - residual / total sum of squares), over every output flattened together."""
    got = np.concatenate([np.asarray(o, np.float64).ravel() for o in outputs])
    want = np.concatenate([np.asarray(f, np.float64).ravel() for f in reference])
    scale = max(float(np.abs(want).max()), np.finfo(np.float32).tiny)
    total = float(((want - want.mean()) ** 2).sum())
    residual = float(((got - want) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return float(np.abs(got - want).max()) / scale, r2


def _as_list(result: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(result)] if isinstance(result, np.ndarray) else [np.asarray(r) for r in result]


def prune_empty_family_dirs(results: list[VariantResult]) -> None:
    """Seal each family that has passing variants (its validation.json vouches for them, archive.sh packs
    nothing else) and move it from the staging folder into place, replacing an older one; a family with
    none passing is removed, here and in place. The staging folder goes; results point at the new places."""
    staged = {r.path.parent for r in results if r.family != "fp32"}
    for directory in staged:
        target = directory.parent.parent / directory.name
        passed = [r for r in results if r.path.parent == directory and r.passed]
        if not passed or not any(directory.glob("model.*")):
            shutil.rmtree(directory, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)  # an older run's family of the same name is stale now
            continue
        seal(directory, {"variants": {r.variant: {"reference": r.reference, "rtol": r.rtol, "atol": r.atol,
                                                  "accuracy": r.accuracy, "agreement": r.agreement,
                                                  "relative_error": r.relative_error, "r2": r.r2,
                                                  "checks": validate.comparisons_as_json(r.output_check)}
                                      for r in passed}})
        shutil.rmtree(target, ignore_errors=True)
        os.replace(directory, target)
        for r in results:
            if r.path.parent == directory:
                r.path = target / r.path.name
    for staging in {directory.parent for directory in staged}:
        if staging.name.startswith(STAGING_PREFIX):
            shutil.rmtree(staging, ignore_errors=True)
