"""Variants are built, checked against their reference and gated on accuracy."""
from __future__ import annotations



from servekit.deploy_size import closure
from servekit.variants import Gates, judge

EXPECTED = {"ts_fp32", "onnx_fp32", "ts_int8", "onnx_int8", "ts_pruned", "onnx_pruned", "ts_pruned_int8",
            "onnx_pruned_int8", "onnx_qdq_int8", "onnx_fp16"}


def test_every_variant_is_built_for_both_models(variant_results) -> None:
    for model in ("digits_mlp", "digits_cnn"):
        assert {r.variant for r in variant_results if r.model == model} == EXPECTED


def test_int8_and_pruned_variants_pass_the_default_gates(variant_results) -> None:
    for r in variant_results:
        if r.variant in {"ts_int8", "onnx_int8", "ts_pruned", "onnx_pruned", "ts_pruned_int8"}:
            assert r.passed, f"{r.model} {r.variant}: {r.reason}"
            assert r.agreement >= 0.99 and r.path.exists()


def test_pruned_variants_report_sparsity(variant_results) -> None:
    pruned = next(r for r in variant_results if r.variant == "ts_pruned")
    assert abs(pruned.sparsity - 0.2) < 0.01 and pruned.sparsity_per_layer


def test_output_checks_use_the_stated_tolerance(variant_results) -> None:
    for r in variant_results:
        assert [c.batch_size for c in r.output_check] == [1, 7, 64]
        assert all(c.max_abs_diff <= r.atol + r.rtol * 100 for c in r.output_check)


def test_failing_gate_removes_the_artifact_and_says_why(built_models, tmp_path) -> None:
    from servekit.variants import VariantResult

    built = built_models["digits_mlp"]
    broken = tmp_path / "model.pt"
    # A "variant" whose weights are scrambled: a real model file that answers wrongly.
    import torch

    scrambled = type(built.model)()
    torch.manual_seed(1)
    torch.jit.save(torch.jit.trace(scrambled.eval(), torch.zeros(2, 64)), str(broken))
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


def test_the_variants_plot_draws_a_model_below_90_percent_accuracy(tmp_path) -> None:
    """A ResNet-18 trained briefly (78 %) made the marker area negative and matplotlib fail."""
    from servekit.variants_report import plot

    rows = [{"model": "weak", "variant": v, "format": "onnx", "passed": True, "file_bytes": 1024 * (i + 1),
             "p50_ms_b32": 1.0 + i, "accuracy": 0.78} for i, v in enumerate(("onnx_fp32", "onnx_qdq_int8"))]
    plot(rows, tmp_path / "variants.png")
    assert (tmp_path / "variants.png").stat().st_size > 0
