"""Export validation catches broken exports and says by how much they failed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from servekit.build.export import ExportSpec, export_onnx, export_torchscript
from servekit.build.validate import (ExportValidationError, compare, onnx_runner, torchscript_runner,
                               validate_artifact)
from support.user_models import branchy, tiny_classifier

SPEC = ExportSpec("features", (4,))
HELDOUT = np.random.default_rng(0).uniform(0.1, 1.0, size=(64, 4)).astype(np.float32)


def test_compare_reports_worst_abs_and_rel_diff() -> None:
    result = compare("x", 3, np.array([[1.0, 2.0]]), np.array([[1.0, 2.5]]), rtol=1e-3, atol=1e-5)
    assert not result.passed
    assert result.max_abs_diff == pytest.approx(0.5) and result.max_rel_diff == pytest.approx(0.25)


def test_compare_flags_shape_mismatch() -> None:
    result = compare("x", 1, np.zeros((1, 3)), np.zeros((1, 2)), rtol=1e-3, atol=1e-5)
    assert not result.passed and "shape" in result.problem


def test_good_exports_pass_at_every_batch_size(tmp_path: Path) -> None:
    model = tiny_classifier()
    onnx_path = export_onnx(model, SPEC, tmp_path / "m.onnx")
    ts_path = export_torchscript(model, SPEC, tmp_path / "m.pt")
    for name, runner in (("onnx", onnx_runner(onnx_path)), ("torchscript", torchscript_runner(ts_path))):
        results = validate_artifact(model, name, runner, HELDOUT)
        assert [r.batch_size for r in results] == [1, 7, 64] and all(r.passed for r in results)


def test_onnx_has_names_opset_and_dynamic_batch_axis(tmp_path: Path) -> None:
    graph_model = onnx.load(export_onnx(tiny_classifier(), SPEC, tmp_path / "m.onnx"))
    assert graph_model.opset_import[0].version >= 17
    for value in (graph_model.graph.input[0], graph_model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph_model.graph.input[0].name == "features" and graph_model.graph.output[0].name == "logits"


def test_tampered_onnx_weights_fail_with_the_numbers(tmp_path: Path) -> None:
    model = tiny_classifier()
    path = export_onnx(model, SPEC, tmp_path / "m.onnx")
    graph_model = onnx.load(path)
    weight = graph_model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, weight.name))
    onnx.save(graph_model, path)
    with pytest.raises(ExportValidationError) as err:
        validate_artifact(model, "onnx", onnx_runner(path), HELDOUT)
    assert [f.batch_size for f in err.value.failures] == [1, 7, 64]
    assert "max |diff|" in str(err.value) and "batch   7" in str(err.value) and "rtol=0.001" in str(err.value)
    assert all(f.max_abs_diff > 1e-5 for f in err.value.failures)


def test_traced_control_flow_is_caught(tmp_path: Path) -> None:
    model = branchy()  # traced with zeros: the 'sum > 0' branch is lost
    path = export_torchscript(model, SPEC, tmp_path / "m.pt")
    with pytest.raises(ExportValidationError, match="torchscript"):
        validate_artifact(model, "torchscript", torchscript_runner(path), HELDOUT)


def test_check_onnx_model_refuses_a_broken_graph(tmp_path: Path) -> None:
    from servekit.build.validate import check_onnx_model

    good = export_onnx(tiny_classifier(), SPEC, tmp_path / "good.onnx")
    check_onnx_model(good)
    model = onnx.load(str(good))
    model.graph.node[0].input[0] = "a_tensor_nothing_produces"  # the first node reads from nowhere
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(onnx.checker.ValidationError, match="a_tensor_nothing_produces"):
        check_onnx_model(broken)


def test_padding_invariance_passes_a_masked_model_and_fails_an_unmasked_one() -> None:
    from handlers.signature import InputSpec, Signature
    from servekit.build.validate import check_padding_invariance, eager_runner
    from support.user_models import masked_mean_text, unmasked_wave

    rng = np.random.default_rng(0)
    text = Signature((InputSpec("input_ids", ("1..16",), "int64", 0, 49), InputSpec("attention_mask", ("1..16",), "int64", 0, 1)))
    heldout = {"input_ids": rng.integers(0, 50, (8, 16)), "attention_mask": np.ones((8, 16), np.int64)}
    masked = check_padding_invariance(eager_runner(masked_mean_text().eval()), heldout, text)
    assert masked.invariant and masked.max_abs_diff < 1e-5 and masked.instances == 8 and masked.longest == 16
    wave = Signature((InputSpec("waveform", ("1600..4000",)),))
    unmasked = check_padding_invariance(eager_runner(unmasked_wave().eval()),
                                        {"waveform": rng.standard_normal((8, 4000)).astype(np.float32)}, wave)
    assert not unmasked.invariant and unmasked.max_abs_diff > 1e-3
    assert "sub-batches of equal length only" in unmasked.describe()
    assert check_padding_invariance(eager_runner(unmasked_wave().eval()),
                                    {"waveform": np.zeros((8, 100), np.float32)},
                                    Signature((InputSpec("waveform", (100,)),))) is None  # nothing to pad
