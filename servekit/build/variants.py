"""Optimized variants of a model, each proven against FP32 and gated on accuracy before archiving.

Variants are grouped into families, one directory each (``build/<model>_<family>/``) holding that
family's ``model.pt``, ``model.onnx`` and/or ``model.pt2`` plus the model's ``model-config.yaml``, so
archive.sh turns them into ``<model>_<family>_ts.mar`` / ``_onnx.mar`` / ``_aoti.mar``.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from servekit.build import validate
from servekit.build.defaults import MAX_ACCURACY_DROP, MIN_AGREEMENT
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


@dataclass(frozen=True)
class Gates:
    """A variant is served only if it loses at most ``max_accuracy_drop`` points and agrees enough."""

    max_accuracy_drop: float = MAX_ACCURACY_DROP
    min_agreement: float = MIN_AGREEMENT


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
    accuracy: float = 0.0
    agreement: float = 0.0
    max_abs_diff_vs_fp32: float = 0.0
    output_check: list[validate.Comparison] = field(default_factory=list)
    passed: bool = False
    reason: str = ""
    sparsity: float | None = None
    sparsity_per_layer: dict[str, float] | None = None


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
    y_test: np.ndarray


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


def build_variants(inputs: VariantInputs, out_root: Path, prune_amount: float = prune.DEFAULT_AMOUNT,
                   finetune_epochs: int = 0) -> list[VariantResult]:
    """Write every variant artifact; return one unjudged result per variant.

    The AOTInductor variants (FP32 and PT2E INT8) are built only when the base export holds a
    model.pt2, i.e. when torch.export could capture the model.
    """
    name, spec, base = inputs.name, inputs.spec, inputs.base_dir
    with_aoti = (base / AOTI_FILE).exists()
    families = ("int8", "pruned", "pruned_int8", "qdq", "fp16") + (("pt2e_int8",) if with_aoti else ())
    dirs = {family: out_root / f"{name}_{family}" for family in families}
    for directory in dirs.values():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        shutil.copy(base / MODEL_CONFIG_FILE, directory / MODEL_CONFIG_FILE)
        if (base / TOKENIZER_FILE).exists():  # a text model's variants take text too
            shutil.copy(base / TOKENIZER_FILE, directory / TOKENIZER_FILE)

    finetune = None
    if finetune_epochs and isinstance(inputs.x_train, dict):
        raise ValueError("fine-tuning after pruning takes one input; this model has several")
    if finetune_epochs:
        finetune = prune.finetuner(torch.from_numpy(inputs.x_train), torch.from_numpy(inputs.y_train), finetune_epochs)
    int8 = quantize.torch_dynamic_int8(inputs.model)
    pruned = prune.prune_global_l1(inputs.model, prune_amount, finetune)
    pruned_int8 = quantize.torch_dynamic_int8(pruned)
    measured = prune.sparsity(pruned)
    half = quantize.torch_fp16(inputs.model)

    def result(variant: str, family: str, path: Path, reference: str, tolerance: tuple[float, float]) -> VariantResult:
        return VariantResult(name, variant, family, FORMAT_BY_SUFFIX[path.suffix], path, reference, *tolerance)

    results = [
        result("ts_fp32", "fp32", base / TORCHSCRIPT_FILE, "fp32", EXACT),
        result("onnx_fp32", "fp32", base / ONNX_FILE, "fp32", EXACT),
        result("ts_int8", "int8", export_torchscript(int8, spec, dirs["int8"] / TORCHSCRIPT_FILE), "int8", EXACT),
        result("onnx_int8", "int8", quantize.onnx_dynamic_int8(base / ONNX_FILE, dirs["int8"] / ONNX_FILE),
               "fp32", INT8_TOLERANCE),
        result("ts_pruned", "pruned", export_torchscript(pruned, spec, dirs["pruned"] / TORCHSCRIPT_FILE), "pruned", EXACT),
        result("onnx_pruned", "pruned", export_onnx(pruned, spec, dirs["pruned"] / ONNX_FILE), "pruned", EXACT),
        result("ts_pruned_int8", "pruned_int8",
               export_torchscript(pruned_int8, spec, dirs["pruned_int8"] / TORCHSCRIPT_FILE), "pruned_int8", EXACT),
        result("onnx_pruned_int8", "pruned_int8",
               quantize.onnx_dynamic_int8(dirs["pruned"] / ONNX_FILE, dirs["pruned_int8"] / ONNX_FILE),
               "pruned", INT8_TOLERANCE),
        result("onnx_qdq_int8", "qdq",
               quantize.onnx_static_qdq_int8(base / ONNX_FILE, dirs["qdq"] / ONNX_FILE,
                                             dict(zip(spec.signature.names, input_arrays(inputs.x_train, spec)))),
               "fp32", INT8_TOLERANCE),
        result("ts_fp16", "fp16", export_torchscript(half, spec, dirs["fp16"] / TORCHSCRIPT_FILE), "fp32", FP16_TOLERANCE),
        result("onnx_fp16", "fp16", quantize.onnx_fp16(base / ONNX_FILE, dirs["fp16"] / ONNX_FILE), "fp32", FP16_TOLERANCE),
    ]
    references = {"fp32": inputs.model, "int8": int8, "pruned": pruned, "pruned_int8": pruned_int8}
    if with_aoti:
        references["pt2e_int8"] = quantize.pt2e_int8(inputs.model, spec, inputs.x_train)
        print("  compiling the PT2E INT8 model.pt2 with AOTInductor", flush=True)
        results += [
            result("aoti_fp32", "fp32", base / AOTI_FILE, "fp32", EXACT),
            result("aoti_pt2e_int8", "pt2e_int8",
                   compile_aoti(capture(references["pt2e_int8"], spec), dirs["pt2e_int8"] / AOTI_FILE),
                   "pt2e_int8", PT2E_TWIN_TOLERANCE),
        ]
    for r in results:
        if r.family.startswith("pruned"):
            r.sparsity, r.sparsity_per_layer = measured.global_fraction, measured.per_layer
    for r in results:
        _check_outputs(r, references[r.reference], inputs.x_test, spec)
    return results


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


def judge(results: list[VariantResult], fp32: nn.Module, x_test: np.ndarray | dict[str, np.ndarray], y_test: np.ndarray,
          gates: Gates, input_names: tuple[str, ...] | None = None) -> None:
    """Fill accuracy/agreement/diff and the verdict; delete the artifacts of failing variants.

    ``x_test`` holds one array, or one per input (then ``input_names`` gives their order).
    """
    arrays = [x_test[name] for name in (input_names or tuple(x_test))] if isinstance(x_test, dict) else [x_test]
    fp32_logits = eager_runner(fp32)(*arrays)
    fp32_pred = fp32_logits.argmax(axis=1)
    fp32_accuracy = float((fp32_pred == y_test).mean())
    for r in results:
        logits = runner_for(r.path, input_names)(*arrays)
        predicted = logits.argmax(axis=1)
        r.accuracy = float((predicted == y_test).mean())
        r.agreement = float((predicted == fp32_pred).mean())
        r.max_abs_diff_vs_fp32 = float(np.abs(logits - fp32_logits).max())
        drop = (fp32_accuracy - r.accuracy) * 100
        problems = [r.reason] if r.reason else []
        if drop > gates.max_accuracy_drop:
            problems.append(f"accuracy {r.accuracy:.2%} is {drop:.2f} points below FP32 {fp32_accuracy:.2%} "
                            f"(allowed {gates.max_accuracy_drop:g})")
        if r.agreement < gates.min_agreement:
            problems.append(f"top-1 agreement with FP32 {r.agreement:.2%} < {gates.min_agreement:.0%}")
        r.passed, r.reason = not problems, "; ".join(problems)
        if not r.passed and r.family != "fp32":
            r.path.unlink(missing_ok=True)


def prune_empty_family_dirs(results: list[VariantResult]) -> None:
    """A family whose every variant failed leaves no directory for archive.sh to trip on; the others get a
    validation.json that vouches for the variants that passed (archive.sh packs nothing else)."""
    for directory in {r.path.parent for r in results if r.family != "fp32"}:
        if not any(directory.glob("model.*")):
            shutil.rmtree(directory)
            continue
        passed = [r for r in results if r.path.parent == directory and r.passed]
        seal(directory, {"variants": {r.variant: {"reference": r.reference, "rtol": r.rtol, "atol": r.atol,
                                                  "accuracy": r.accuracy, "agreement": r.agreement,
                                                  "checks": validate.comparisons_as_json(r.output_check)}
                                      for r in passed}})
