"""Variants are built, checked against their reference and gated on accuracy."""
from __future__ import annotations

import pytest

from servekit.measure.deploy_size import closure
from servekit.build.variants import Gates, judge

EXPECTED = {"ts_fp32", "onnx_fp32", "ts_int8", "onnx_int8", "ts_pruned", "onnx_pruned", "ts_pruned_int8",
            "onnx_pruned_int8", "onnx_qdq_int8", "ts_fp16", "onnx_fp16", "aoti_fp32", "aoti_pt2e_int8"}


def test_every_variant_is_built_for_both_models(variant_results) -> None:
    for model in ("digits_mlp", "digits_cnn"):
        assert {r.variant for r in variant_results if r.model == model} == EXPECTED


def test_int8_and_pruned_variants_pass_the_default_gates(variant_results) -> None:
    for r in variant_results:
        if r.variant in {"ts_int8", "onnx_int8", "ts_pruned", "onnx_pruned", "ts_pruned_int8", "aoti_fp32",
                         "aoti_pt2e_int8"}:
            assert r.passed, f"{r.model} {r.variant}: {r.reason}"
            assert r.agreement >= 0.99 and r.path.exists()


def test_pt2e_int8_runs_int8_kernels_and_matches_its_twin(variant_results) -> None:
    """The .pt2 holds oneDNN INT8 calls (Inductor lowered the Q/DQ pairs), and still answers like its eager twin."""
    import zipfile

    for r in (r for r in variant_results if r.variant == "aoti_pt2e_int8"):
        with zipfile.ZipFile(r.path) as package:
            wrapper = "".join(package.read(n).decode() for n in package.namelist() if n.endswith("wrapper.cpp"))
        assert "_qlinear_pointwise" in wrapper, r.model
        if r.model == "digits_cnn":  # its second convolution; the first (one input channel) stays FP32 on purpose
            assert "_qconv" in wrapper
        assert r.reference == "pt2e_int8" and all(c.passed for c in r.output_check)


def test_pruned_variants_report_sparsity(variant_results) -> None:
    pruned = next(r for r in variant_results if r.variant == "ts_pruned")
    assert abs(pruned.sparsity - 0.2) < 0.01 and pruned.sparsity_per_layer


def test_output_checks_use_the_stated_tolerance(variant_results, built_models) -> None:
    """Each verdict is the elementwise |variant - reference| <= atol + rtol * |reference| the report states."""
    import numpy as np
    import torch

    from servekit.build.variants import runner_for

    checked = 0
    for r in variant_results:
        assert [c.batch_size for c in r.output_check] == [1, 7, 64], r.variant
        if r.reference != "fp32" or not r.path.exists():
            continue  # eager twins (INT8, pruned) live only inside build_variants
        built = built_models[r.model]
        for c in r.output_check:
            batch = np.ascontiguousarray(built.x_test[:c.batch_size])
            with torch.inference_mode():
                expected = built.model(torch.from_numpy(batch)).numpy()
            diff = np.abs(runner_for(r.path)(batch) - expected)
            assert c.passed == bool(np.all(diff <= r.atol + r.rtol * np.abs(expected))), (r.variant, c)
            assert c.max_abs_diff == pytest.approx(float(diff.max()), rel=1e-6, abs=1e-9)
            checked += 1
    assert checked >= 6 * 3  # ts/onnx FP32, ORT INT8, QDQ and FP16 of two models, 3 batch sizes each


def test_every_variant_of_the_demo_models_passes_its_output_check(variant_results) -> None:
    for r in variant_results:
        assert all(c.passed for c in r.output_check), (r.model, r.variant, r.reason)


def test_failing_gate_removes_the_artifact_and_says_why(built_models, tmp_path) -> None:
    from servekit.build.export import ExportSpec, export_torchscript
    from servekit.build.variants import VariantResult

    built = built_models["digits_mlp"]
    broken = tmp_path / "model.pt"
    # A "variant" whose weights are scrambled: a real model file that answers wrongly.
    import torch

    scrambled = type(built.model)()
    torch.manual_seed(1)
    export_torchscript(scrambled, ExportSpec("pixels", (64,)), broken)
    result = VariantResult("digits_mlp", "ts_broken", "broken", "torchscript", broken, "fp32", 1e-3, 1e-5)
    judge([result], built.model, built.x_test, built.y_test, Gates())
    assert not result.passed
    assert "points below FP32" in result.reason and "agreement with FP32" in result.reason
    assert not broken.exists()


def test_deployment_closure_follows_requirements() -> None:
    names = closure(("onnxruntime",))
    assert "onnxruntime" in names and "numpy" in names
    assert "torch" not in names
    assert "torch" in closure(("torchserve", "torch"))


def _shifted_variant(built, tmp_path, wrong: int, righted: int):
    """A real TorchScript "variant": FP32 logits, with ``wrong`` correct answers pushed to another class
    and ``righted`` of FP32's mistakes pushed to the true class (each costs one point of agreement)."""
    import numpy as np
    import torch

    from servekit.build.variants import VariantResult

    with torch.inference_mode():
        fp32_pred = built.model(torch.from_numpy(built.x_test)).argmax(dim=1).numpy()
    correct = np.flatnonzero(fp32_pred == built.y_test)[:wrong]
    mistakes = np.flatnonzero(fp32_pred != built.y_test)[:righted]
    assert len(correct) == wrong and len(mistakes) == righted
    shift = torch.zeros(len(built.x_test), 10)
    for idx in correct:
        shift[idx, (built.y_test[idx] + 1) % 10] = 1e4
    for idx in mistakes:
        shift[idx, built.y_test[idx]] = 1e4

    class Shifted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = built.model
            self.register_buffer("shift", shift)

        def forward(self, x):
            return self.base(x) + self.shift

    path = tmp_path / f"shifted_{wrong}_{righted}.pt"
    torch.jit.save(torch.jit.trace(Shifted().eval(), torch.from_numpy(built.x_test)), str(path))
    return VariantResult(built.name, path.stem, "shifted", "torchscript", path, "fp32", 1e-3, 1e-5)


@pytest.mark.parametrize("wrong, righted, accuracy_ok, agreement_ok", [
    (4, 0, True, True),    # 0.89 points below FP32, 99.11 % agreement: both gates just hold
    (5, 0, False, False),  # 1.11 points below: just past the 1.0-point gate (and 98.89 % agreement)
    (2, 3, True, False),   # accuracy above FP32, but 98.89 % agreement: just under 99 %
])
def test_default_gates_hold_at_their_boundary(built_models, tmp_path, wrong: int, righted: int,
                                              accuracy_ok: bool, agreement_ok: bool) -> None:
    built = built_models["digits_mlp"]
    assert len(built.x_test) == 450  # the boundaries below are counted in images of 450
    result = _shifted_variant(built, tmp_path, wrong, righted)
    judge([result], built.model, built.x_test, built.y_test, Gates())
    assert result.agreement == pytest.approx((450 - wrong - righted) / 450)
    assert ("points below FP32" not in result.reason) == accuracy_ok, result.reason
    assert ("agreement with FP32" not in result.reason) == agreement_ok, result.reason
    assert result.passed == (accuracy_ok and agreement_ok)
    assert result.path.exists() == result.passed
def test_the_variants_plot_draws_a_model_below_90_percent_accuracy(tmp_path) -> None:
    """A ResNet-18 trained briefly (78 %) made the marker area negative and matplotlib fail."""
    from servekit.measure.variants_report import plot

    rows = [{"model": "weak", "variant": v, "format": "onnx", "passed": True, "file_bytes": 1024 * (i + 1),
             "p50_ms_b32": 1.0 + i, "accuracy": 0.78} for i, v in enumerate(("onnx_fp32", "onnx_qdq_int8"))]
    plot(rows, tmp_path / "variants.png")
    assert (tmp_path / "variants.png").stat().st_size > 0
