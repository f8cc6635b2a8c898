"""archive.sh: self-contained archives, idempotent, clear failures."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from support.serving import run_archive_sh

pytestmark = pytest.mark.integration


def test_archive_is_self_contained(model_store: Path) -> None:
    with zipfile.ZipFile(model_store / "digits_cnn_onnx.mar") as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        config = yaml.safe_load(archive.read("model-config.yaml"))
    assert {"model.onnx", "handler.py", "handlers/pipeline.py", "handlers/backends/onnxruntime.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert manifest["model"]["serializedFile"] == "model.onnx"
    assert manifest["model"]["handler"] == "handler.py"
    assert {"batchSize", "maxBatchDelay", "minWorkers", "maxWorkers", "responseTimeout"} <= set(config)
    assert config["handler"]["input"]["shape"] == [1, 8, 8]


def test_rerun_overwrites_in_place(tmp_path: Path, built_models) -> None:
    directory = built_models["digits_mlp"].directory
    for _ in range(2):
        result = run_archive_sh(tmp_path, directory)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_mlp_aoti.mar", "digits_mlp_onnx.mar", "digits_mlp_ts.mar"]


def test_missing_artifact_fails_with_a_clear_message(tmp_path: Path, built_models) -> None:
    model_dir = tmp_path / "half"
    model_dir.mkdir()
    shutil.copy(built_models["digits_mlp"].directory / "model-config.yaml", model_dir)
    result = run_archive_sh(tmp_path / "store", model_dir)
    assert result.returncode != 0
    assert "has none of model.pt, model.onnx, model.pt2" in result.stderr
    result = run_archive_sh(tmp_path / "store", tmp_path / "nowhere")
    assert result.returncode != 0 and "does not exist" in result.stderr


def _copy_export(built_models, tmp_path: Path) -> Path:
    model_dir = tmp_path / "mine"
    shutil.copytree(built_models["digits_mlp"].directory, model_dir)
    return model_dir


@pytest.mark.parametrize(("change", "message"), [
    ("tamper", "model.onnx changed after validation"),
    ("stale", "validation.json vouches for ['model-config.yaml', 'model.onnx', 'model.pt2'] but the folder holds"),
    ("no voucher", "validation.json is missing"),
    ("old voucher", "validation.json holds no 'artifacts' hashes"),
])
def test_a_folder_whose_artifacts_validation_does_not_vouch_for_is_refused(tmp_path: Path, built_models,
                                                                          change: str, message: str) -> None:
    model_dir = _copy_export(built_models, tmp_path)
    voucher = model_dir / "validation.json"
    if change == "tamper":
        with open(model_dir / "model.onnx", "ab") as onnx_file:
            onnx_file.write(b"\0")
    elif change == "stale":  # validation vouches for an export without TorchScript; an older model.pt is still there
        document = json.loads(voucher.read_text())
        del document["artifacts"]["model.pt"]
        voucher.write_text(json.dumps(document))
    elif change == "no voucher":
        voucher.unlink()
    else:
        document = json.loads(voucher.read_text())
        del document["artifacts"]
        voucher.write_text(json.dumps(document))
    result = run_archive_sh(tmp_path / "store", model_dir)
    assert result.returncode != 0
    assert message in result.stderr and "re-run 'servekit export'" in result.stderr
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").iterdir())


def test_another_archive_run_in_the_shared_temporary_folder_cannot_interfere(tmp_path: Path, built_models) -> None:
    """torch-model-archiver packs in $TMPDIR/<model name>: another user's run of the same model name wrote into
    and deleted that folder under ours (the suite failed with FileNotFoundError on model-config.yaml while another
    session archived digits_mlp). Here the shared folder holds a file of that name, so using it must fail."""
    import os
    import subprocess
    import sys

    from servekit.serve.torchserve import REPO_ROOT

    shared = tmp_path / "shared_tmp"
    shared.mkdir()
    for name in ("digits_mlp_ts", "digits_mlp_onnx", "digits_mlp_aoti"):
        (shared / name).write_text("another user's half-packed archive")
    env = {**os.environ, "TMPDIR": str(shared), "MODEL_STORE": str(tmp_path / "store"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(REPO_ROOT / "archive.sh"), str(built_models["digits_mlp"].directory)], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "store" / "digits_mlp_onnx.mar").exists()
    assert (shared / "digits_mlp_ts").read_text() == "another user's half-packed archive"


def test_archive_sh_help_and_the_users_own_folder(tmp_path: Path, built_models) -> None:
    """--help says how to use it; from another folder, build/ and model_store/ are that folder's."""
    import os
    import shutil
    import subprocess
    import sys

    from servekit.serve.torchserve import REPO_ROOT

    result = subprocess.run([str(REPO_ROOT / "archive.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "servekit archive" in result.stdout and "does not exist" not in result.stderr
    shutil.copytree(built_models["digits_mlp"].directory, tmp_path / "build" / "digits_mlp")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MODEL_STORE", None)
    env.pop("BUILD_DIR", None)
    result = subprocess.run([str(Path(sys.executable).parent / "servekit"), "archive"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "model_store").iterdir()) == [
        "digits_mlp_aoti.mar", "digits_mlp_onnx.mar", "digits_mlp_ts.mar"]
