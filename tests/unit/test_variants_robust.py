"""Variants of models the demo never exercised: several inputs calibrated from named arrays, a conversion that
torch refuses for the model, an interrupted run, and a regressor gated on its outputs rather than an argmax."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from handlers.signature import InputSpec, Signature
from servekit.build.export import ExportSpec, export_torchscript
from servekit.build.model_config import Batching
from servekit.build.model_dir import VALIDATION_FILE, ModelBuild, build_model_dir
from servekit.build.optimize import quantize
from servekit.build.variants import (Gates, VariantInputs, VariantResult, build_variants, judge, prune_empty_family_dirs,
                                     staging_root)
from support.user_models import ids_and_mask, two_inputs

IDS = Signature((InputSpec("ids", ("1..12",), "int64", 0, 49), InputSpec("mask", ("1..12",), "int64", 0, 1)),)


def ids_data(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = (np.arange(12) < rng.integers(1, 13, (count, 1))).astype(np.int64)
    return {"ids": rng.integers(1, 50, (count, 12)) * mask, "mask": mask}


@pytest.fixture(scope="module")
def ids_job(tmp_path_factory) -> VariantInputs:
    """The ids + mask classifier exported (TorchScript and ONNX) into a build folder of its own."""
    root = tmp_path_factory.mktemp("ids_variants")
    model, heldout = ids_and_mask(), ids_data(128, 1)
    build_model_dir(model, ModelBuild("ids", IDS, ("a", "b", "c"), Batching(), formats=("torchscript", "onnx")), heldout,
                    root / "ids")
    with torch.inference_mode():
        labels = model(torch.from_numpy(heldout["ids"]), torch.from_numpy(heldout["mask"])).argmax(1).numpy()
    train = ids_data(256, 2)
    return VariantInputs("ids", model, ExportSpec.of(IDS), root / "ids", train, np.zeros(256, np.int64), heldout, labels)


def family_dirs(root: Path) -> list[Path]:
    """What archive.sh's build/*/model-config.yaml glob would pick up."""
    return sorted(p.parent for p in root.glob("*/model-config.yaml"))


def test_a_variant_torch_cannot_build_is_rejected_with_its_reason_and_the_others_still_build(ids_job) -> None:
    root = ids_job.base_dir.parent
    results = build_variants(ids_job, root)
    judge(results, ids_job.model, ids_job.x_test, ids_job.y_test, Gates(), IDS.names)
    prune_empty_family_dirs(results)
    by_name = {r.variant: r for r in results}
    assert not by_name["ts_fp16"].passed
    assert "could not build: RuntimeError" in by_name["ts_fp16"].reason and "Half" in by_name["ts_fp16"].reason
    for name in ("ts_int8", "onnx_int8", "ts_pruned", "onnx_qdq_int8", "onnx_fp16"):  # built and judged all the same
        assert "could not build" not in by_name[name].reason and by_name[name].accuracy > 0.9, by_name[name]
    assert any(r.passed and r.family != "fp32" for r in results)  # and those were sealed and moved into place
    assert not staging_root(ids_job, root).exists()
    for directory in family_dirs(root):  # every folder archive.sh would see is sealed
        assert (directory / VALIDATION_FILE).exists(), directory


def test_an_interrupted_run_leaves_no_half_built_family_for_archive_sh(ids_job, tmp_path) -> None:
    root = tmp_path / "build"
    job = VariantInputs(ids_job.name, ids_job.model, ids_job.spec, ids_job.base_dir, ids_job.x_train, ids_job.y_train,
                        ids_job.x_test, ids_job.y_test)
    root.mkdir()
    results = build_variants(job, root)  # then the run dies before judging and sealing
    assert results and family_dirs(root) == []  # only the dot-staging folder, which archive.sh skips
    assert staging_root(job, root).is_dir()
    build_variants(job, root)  # the next run starts from a clean staging folder
    assert len(list(staging_root(job, root).iterdir())) == 5


def test_pt2e_int8_calibrates_a_model_with_several_inputs_from_named_arrays() -> None:
    """`servekit variants` on a two-input model stopped here: calibration[:256] on the dict of inputs."""
    signature = Signature((InputSpec("a", (6,)), InputSpec("b", (4,))))
    rng = np.random.default_rng(0)
    calibration = {"a": rng.uniform(0, 1, (64, 6)).astype(np.float32), "b": rng.uniform(0, 1, (64, 4)).astype(np.float32)}
    model = two_inputs()
    twin = quantize.pt2e_int8(model, ExportSpec.of(signature), calibration)
    a, b = (torch.from_numpy(calibration[name][:8]) for name in ("a", "b"))
    with torch.no_grad():
        np.testing.assert_allclose(twin(a, b).numpy(), model(a, b).numpy(), atol=0.05)


class Scaled(torch.nn.Module):
    """A regressor's output times ``factor``: a "variant" off by (factor - 1) of every value."""

    def __init__(self, base: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.base, self.factor = base, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.factor


@pytest.mark.parametrize(("factor", "passes"), [(1.0, True), (1.02, True), (1.5, False)])
def test_a_regressors_variants_are_gated_on_output_error_not_an_argmax(tmp_path, factor: float, passes: bool) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).eval()
    x = np.random.default_rng(0).standard_normal((128, 4)).astype(np.float32)
    path = export_torchscript(Scaled(model, factor).eval(), ExportSpec("x", (4,)), tmp_path / "model.pt")
    result = VariantResult("reg", "ts_scaled", "scaled", "torchscript", path, "fp32", 1e-3, 1e-5)
    judge([result], model, x, None, Gates(), task="regression")
    # The argmax of one output is always 0: the old gate saw 100 % agreement whatever the values.
    assert result.passed == passes, result.reason
    assert result.accuracy is None and result.agreement is None
    assert result.relative_error == pytest.approx(abs(factor - 1), rel=1e-3)
    if not passes:
        assert "worst output error 0.5" in result.reason and "R^2 against FP32" in result.reason
