"""Pruning and quantization building blocks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from servekit.build.export import ExportSpec, export_onnx
from servekit.build.optimize.prune import finetuner, prune_global_l1, sparsity
from servekit.build.optimize.quantize import onnx_dynamic_int8, onnx_fp16, topologically_sort, torch_dynamic_int8
from servekit.build.validate import onnx_runner
from support.user_models import tiny_classifier

SPEC = ExportSpec("features", (4,))


def test_global_pruning_hits_the_amount_and_is_permanent() -> None:
    model = tiny_classifier()
    pruned = prune_global_l1(model, amount=0.25)
    measured = sparsity(pruned)
    assert measured.global_fraction == pytest.approx(0.25, abs=0.01)
    assert set(measured.per_layer) == {"0", "2"}
    assert not any(name.endswith("_orig") for name, _ in pruned.named_parameters())  # prune.remove ran
    assert sparsity(model).global_fraction == 0.0  # the original is untouched


def test_finetune_keeps_pruned_weights_at_zero() -> None:
    model = tiny_classifier()
    x, y = torch.randn(128, 4), torch.randint(0, 3, (128,))
    pruned = prune_global_l1(model, amount=0.3, finetune=finetuner(x, y, epochs=3))
    assert sparsity(pruned).global_fraction == pytest.approx(0.3, abs=0.01)


def test_prune_amount_is_checked() -> None:
    with pytest.raises(ValueError, match="prune amount"):
        prune_global_l1(tiny_classifier(), amount=1.5)


def test_torch_dynamic_int8_quantizes_linear_layers() -> None:
    quantized = torch_dynamic_int8(tiny_classifier())
    assert isinstance(quantized[0], torch.ao.nn.quantized.dynamic.Linear)


def test_onnx_fp16_passes_the_checker_and_keeps_float32_io(tmp_path: Path) -> None:
    source = export_onnx(tiny_classifier(), SPEC, tmp_path / "m.onnx")
    target = onnx_fp16(source, tmp_path / "h.onnx")
    onnx.checker.check_model(str(target), full_check=True)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = onnx_runner(target)(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, onnx_runner(source)(x), atol=1e-2)


def test_onnx_dynamic_int8_is_smaller_and_close(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3))
    source = export_onnx(model, SPEC, tmp_path / "m.onnx")
    target = onnx_dynamic_int8(source, tmp_path / "q.onnx")
    assert target.stat().st_size < source.stat().st_size / 2
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(onnx_runner(target)(x), onnx_runner(source)(x), atol=0.1)
    assert not target.with_suffix(".pre.onnx").exists()


def test_topological_sort_orders_nodes() -> None:
    first = onnx.helper.make_node("Relu", ["x"], ["a"], name="first")
    second = onnx.helper.make_node("Relu", ["a"], ["y"], name="second")
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([second, first], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    topologically_sort(graph)
    assert [n.name for n in graph.node] == ["first", "second"]
