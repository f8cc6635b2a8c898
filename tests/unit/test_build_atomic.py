"""A model directory changes only when a whole export passed: a failed one leaves the last good one as
it was, and validation.json vouches (sha256) for exactly the artifacts beside it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from handlers.config import InputContract
from handlers.errors import ConfigError
from servekit.build.model_dir import ARTIFACTS_KEY, ModelBuild, build_model_dir, file_sha256
from servekit.build.validate import ExportValidationError
from support.user_models import branchy, tiny_classifier

CONTRACT = InputContract("features", (4,), "float32", 0.1, 1.0)
FORMATS = ("torchscript", "onnx")  # AOTInductor's compile is covered in test_aoti
HELDOUT = np.random.default_rng(0).uniform(0.1, 1.0, size=(64, 4)).astype(np.float32)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_failed_export_leaves_the_previous_good_export_untouched(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    build_model_dir(tiny_classifier(), ModelBuild("mine", CONTRACT, ("a", "b", "c"), formats=FORMATS), HELDOUT, out)
    good = _files(out)
    with pytest.raises(ExportValidationError):
        build_model_dir(branchy(), ModelBuild("mine", CONTRACT, ("x", "y", "z"), formats=FORMATS), HELDOUT, out)
    assert _files(out) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left behind


def test_validation_json_vouches_for_exactly_the_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    build_model_dir(tiny_classifier(), ModelBuild("mine", CONTRACT, (), formats=FORMATS), HELDOUT, out)
    vouched = json.loads((out / "validation.json").read_text())[ARTIFACTS_KEY]
    assert vouched == {name: file_sha256(out / name) for name in ("model.pt", "model.onnx", "model-config.yaml")}
    # A re-export in one format removes the other: an old model.onnx must not be archived beside a new model.pt.
    build_model_dir(tiny_classifier(), ModelBuild("mine", CONTRACT, (), formats=("torchscript",)), HELDOUT, out)
    assert not (out / "model.onnx").exists()
    assert set(json.loads((out / "validation.json").read_text())[ARTIFACTS_KEY]) == {"model.pt", "model-config.yaml"}


def test_a_label_count_that_does_not_match_the_output_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"2 labels given \(cat, dog\) but the model answers 3 classes"):
        build_model_dir(tiny_classifier(), ModelBuild("mine", CONTRACT, ("cat", "dog"), formats=FORMATS), HELDOUT, tmp_path / "mine")
    assert not list(tmp_path.iterdir())
