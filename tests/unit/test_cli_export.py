"""`servekit export` for a bring-your-own model: validated exports, or a non-zero exit that says why."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from servekit.cli import main
from support.user_models import tiny_classifier


def test_user_model_exports_with_contract_and_batching(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "w.pt"
    torch.save(tiny_classifier().state_dict(), weights)
    status = main(["export", "--factory", "support.user_models:tiny_classifier", "--weights", str(weights),
                   "--name", "mine", "--task", "classification", "--input-name", "features", "--input-shape", "4", "--min", "-1", "--max", "1",
                   "--labels", "a,b,c", "--batch-size", "8", "--max-batch-delay", "3", "--build-dir", str(tmp_path)])
    assert status == 0
    out_dir = tmp_path / "mine"
    assert {p.name for p in out_dir.iterdir()} >= {"model.pt", "model.onnx", "model.pt2", "model-config.yaml", "validation.json"}
    config = yaml.safe_load((out_dir / "model-config.yaml").read_text())
    assert config["batchSize"] == 8 and config["maxBatchDelay"] == 3
    assert config["handler"]["input"] == {"name": "features", "shape": [4], "dtype": "float32", "min": -1.0, "max": 1.0}
    assert config["handler"]["labels"] == ["a", "b", "c"]
    assert "batch  64" in capsys.readouterr().out


def test_broken_export_exits_non_zero_with_the_difference(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["export", "--factory", "support.user_models:branchy", "--random-weights", "--name", "bad", "--task", "classification",
                   "--input-shape", "4", "--min", "0.1", "--max", "1", "--build-dir", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert "export validation failed" in err and "max |diff|" in err and "batch   1" in err
    assert not (tmp_path / "bad" / "model-config.yaml").exists()


@pytest.mark.parametrize(("reference", "message"), [
    ("no_colon", "must look like 'package.module:factory'"),
    ("support.user_models:missing", "cannot import"),
    ("support.user_models:not_a_module", "not a torch.nn.Module"),
])
def test_bad_model_reference_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture,
                                          reference: str, message: str) -> None:
    status = main(["export", "--factory", reference, "--random-weights", "--name", "x", "--task", "classification", "--input-shape", "4",
                   "--build-dir", str(tmp_path)])
    assert status == 2 and message in capsys.readouterr().err


def test_user_model_variants_are_gated_archived_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    import numpy as np

    from support.models import eager_predictions

    weights = tmp_path / "w.pt"
    model = tiny_classifier()
    torch.save(model.state_dict(), weights)
    x = np.random.default_rng(0).uniform(-1, 1, size=(128, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", eager_predictions(model, x))  # labels = FP32's answers
    common = ["--factory", "support.user_models:tiny_classifier", "--weights", str(weights), "--name", "mine",
              "--build-dir", str(tmp_path / "build")]
    # Without model.pt2 (its compile is covered elsewhere), so no AOTInductor variants: keeps this test fast.
    assert main(["export", *common, "--task", "classification", "--input-name", "features", "--input-shape", "4",
                 "--min", "-1", "--max", "1", "--heldout", str(tmp_path / "x.npy"), "--formats", "torchscript,onnx"]) == 0
    assert not (tmp_path / "build" / "mine" / "model.pt2").exists()
    assert main(["variants", *common, "--heldout", str(tmp_path / "x.npy"), "--heldout-labels", str(tmp_path / "y.npy"),
                 "--model-store", str(tmp_path / "store"), "--reports-dir", str(tmp_path / "reports")]) == 0
    report = json.loads((tmp_path / "reports" / "variants.json").read_text())
    assert {r["variant"] for r in report["variants"]} >= {"ts_int8", "onnx_int8", "ts_pruned", "onnx_qdq_int8"}
    archived = {p.name for p in (tmp_path / "store").iterdir()}
    families = {"ts_int8": "mine_int8_ts.mar", "onnx_int8": "mine_int8_onnx.mar", "ts_pruned": "mine_pruned_ts.mar",
                "onnx_qdq_int8": "mine_qdq_onnx.mar", "onnx_fp16": "mine_fp16_onnx.mar"}
    for row in report["variants"]:
        if row["variant"] in families:
            assert (families[row["variant"]] in archived) == row["passed"], row
        if row["passed"]:
            assert row["p50_ms_b32"] > 0
    assert (tmp_path / "reports" / "variants.md").read_text().startswith("# Optimized variants")


def test_user_model_variants_need_labelled_heldout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["variants", "--factory", "support.user_models:tiny_classifier", "--random-weights", "--name", "mine",
                 "--build-dir", str(tmp_path)]) == 2
    assert "need --heldout" in capsys.readouterr().err


def _stderr_is_one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(("extra", "message"), [
    (["--labels", "cat,dog"], "2 labels given (cat, dog) but the model answers 3 classes"),
    (["--heldout", "{few}"], "holds 10 held-out inputs; validation needs at least 64"),
    (["--heldout", "{missing}"], "does not exist"),
    (["--weights", "{wrong_weights}"], "is not a state_dict of"),
    (["--input-shape", "four"], "--input-shape must be comma-separated integers"),
    ([], "--weights is missing: without it the model keeps its random initialisation"),
    (["--random-weights", "--input-shape", "5"], "does not take the declared inputs (input: float32 [N, 5]): RuntimeError: "
                                                 "mat1 and mat2 shapes cannot be multiplied"),
])
def test_every_export_error_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           extra: list[str], message: str) -> None:
    np.save(tmp_path / "few.npy", np.random.default_rng(0).uniform(0, 1, size=(10, 4)).astype(np.float32))
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "wrong.pt")
    paths = {"few": tmp_path / "few.npy", "missing": tmp_path / "missing.npy", "wrong_weights": tmp_path / "wrong.pt"}
    args = ["export", "--factory", "support.user_models:tiny_classifier", "--name", "mine", "--task", "classification",
            "--input-shape", "4", "--build-dir", str(tmp_path / "build")]
    # every case but the missing-weights one says which weights it means
    weights = [] if not extra or "--weights" in extra or "--random-weights" in extra else ["--random-weights"]
    status = main(args + weights + [a.format(**paths) for a in extra])
    assert status == 2
    assert message in _stderr_is_one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "build").exists()


def test_a_failed_validation_is_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["export", "--factory", "support.user_models:branchy", "--random-weights", "--name", "bad", "--task", "classification",
                   "--input-shape", "4", "--min", "0.1", "--max", "1", "--build-dir", str(tmp_path)])
    assert status == 2
    line = _stderr_is_one_error_line(capsys.readouterr().err)
    assert "export validation failed" in line and "batch   1" in line


def test_an_unexpected_error_is_one_line_with_a_way_to_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVEKIT_TRACEBACK", raising=False)
    # A factory that raises: the user's own code failing, which servekit cannot explain any better.
    (tmp_path / "exploding.py").write_text("def build():\n    raise ZeroDivisionError('inside the factory')\n")
    monkeypatch.chdir(tmp_path)
    status = main(["export", "--factory", "exploding:build", "--random-weights", "--name", "x", "--task", "regression", "--input-shape", "4"])
    assert status == 1
    line = _stderr_is_one_error_line(capsys.readouterr().err)
    assert "unexpected ZeroDivisionError: inside the factory" in line and "SERVEKIT_TRACEBACK=1" in line


def test_factory_is_imported_from_the_current_folder_like_python_m(tmp_path: Path) -> None:
    """The console script, run from the folder that holds the user's package, without PYTHONPATH."""
    import os
    import subprocess
    import sys

    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("import torch\n\ndef build_net():\n    torch.manual_seed(0)\n"
                                       "    return torch.nn.Sequential(torch.nn.Linear(4, 3))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(Path(sys.executable).parent / "servekit"), "export", "--factory", "mypackage.models:build_net",
                             "--random-weights", "--name", "mynet", "--task", "classification", "--input-shape", "4", "--labels", "a,b,c",
                             "--formats", "torchscript,onnx"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "build" / "mynet" / "validation.json").exists()


def test_make_composition_leaves_the_tracked_report_alone() -> None:
    from servekit.cli import build_parser
    from servekit.serve.torchserve import REPO_ROOT

    assert build_parser().parse_args(["composition", "--bench", "6"]).reports_dir is None
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ncomposition:"):].split("\n\n", 1)[0]
    assert "servekit composition" in recipe and "--reports-dir" not in recipe
def test_a_trace_that_baked_in_one_length_is_refused_with_every_failing_case(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    status = main(["export", "--factory", "support.user_models:baked_length", "--random-weights", "--name", "baked", "--task", "embedding",
                   "--input", "input_ids:int64:1..16:0..49", "--input", "attention_mask:int64:1..16:0..1",
                   "--build-dir", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert "export validation failed" in err and "length    1: max |diff|" in err and "length   16: max |diff|" in err
    assert "length    8" not in err  # the length it was traced at is right
    assert not (tmp_path / "baked" / "model-config.yaml").exists()


@pytest.mark.parametrize(("options", "message"), [
    (["--input-shape", "4"], "needs --name and --task"),
    (["--task", "regression", "--input", "x:float32"], "must look like NAME:DTYPE:DIMS"),
    (["--task", "regression", "--input", "x:float32:0..4"], "needs 1 <= low <= high"),
    (["--task", "regression", "--input", "x:complex64:4"], "not one of"),
    (["--task", "regression", "--input", "x:float32:4:lo..hi"], "range must look like MIN..MAX"),
    (["--task", "regression", "--input", "x:float32:4", "--labels", "a,b"], "are for classification"),
])
def test_bad_signature_options_are_explained(tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str],
                                             message: str) -> None:
    status = main(["export", "--factory", "support.user_models:tiny_classifier", "--random-weights", "--name", "x", *options,
                   "--build-dir", str(tmp_path)])
    assert status == 2 and message in capsys.readouterr().err
