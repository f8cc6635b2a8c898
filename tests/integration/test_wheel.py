"""The wheel works without a checkout: built from the sources, installed (not editable) into a fresh
virtual environment, it answers --help and --version, exports, archives (its packaged archive.sh and
handlers) and serves a model through TorchServe with its packaged config.properties.

The dependencies (torch, TorchServe, ...) are not ours to test and would take minutes to unpack again:
the fresh environment sees the project environment's site-packages through a .pth line (which
processes no .pth files there, so the editable servekit stays invisible), and the three console
scripts it needs from them are copied with the fresh interpreter in their first line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from servekit.serve.torchserve import torchserve_available
from support.checkout import copy_checkout
from support.serving import require

pytestmark = pytest.mark.integration
DEPENDENCY_SCRIPTS = ("torchserve", "torch-model-archiver", "torch-workflow-archiver")
PACKAGED = ("handlers/handler.py", "handlers/tasks/classification.py", "handlers/bodies/decode.py",
            "servekit/build/archive.sh", "servekit/serve/config.properties",
            "servekit/measure/bench/reference_handlers/plain_handler.py")
USER_MODEL = '''
import torch
from torch import nn


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
'''
SERVE = '''
import json, sys
import numpy as np
import servekit
from servekit.serve.torchserve import TorchServe

assert servekit.__file__.startswith(sys.prefix), servekit.__file__  # the installed copy, not the checkout
with TorchServe("model_store", "ts") as client:
    client.register("tiny_onnx.mar", batch_size=4, max_batch_delay_ms=5)
    x = np.load("x.npy")
    print(json.dumps(client.predict_npy("tiny_onnx", x)))
'''


def fresh_venv(root: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed (no -e), seeing the project environment's dependencies."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for name in DEPENDENCY_SCRIPTS:
        script = (Path(sys.executable).parent / name).read_text().split("\n", 1)[1]
        (root / "bin" / name).write_text(f"#!{python}\n{script}")
        (root / "bin" / name).chmod(0o755)
    return root


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = copy_checkout(root / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(root / "dist"), str(src)], check=True, cwd=root)
    [built] = (root / "dist").glob("servekit-*.whl")
    return built


def test_the_wheel_holds_every_runtime_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert set(PACKAGED) <= names, sorted(set(PACKAGED) - names)
    assert not any(name.startswith(("tests/", "build/", "docs/")) for name in names)


def test_an_installed_servekit_exports_archives_and_serves(wheel: Path, tmp_path: Path) -> None:
    require(torchserve_available(), "Java 17 or the torchserve launcher (TorchServe needs both)")
    venv = fresh_venv(tmp_path / "venv", wheel)
    servekit = str(venv / "bin" / "servekit")
    work = tmp_path / "work"  # the user's own folder: no checkout in sight
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"

    def run(*argv: str) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{argv}: {result.stderr[-2000:]}"
        return result

    assert "export" in run(servekit, "--help").stdout
    assert run(servekit, "--version").stdout.startswith("servekit ")
    (work / "mymodel.py").write_text(textwrap.dedent(USER_MODEL))
    sys.path.insert(0, str(work))
    try:
        import mymodel
        torch.manual_seed(0)
        model = mymodel.build().eval()
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("mymodel", None)
    torch.save(model.state_dict(), work / "weights.pt")
    run(servekit, "export", "--factory", "mymodel:build", "--weights", "weights.pt", "--name", "tiny",
        "--task", "classification", "--input-shape", "4", "--labels", "a,b,c", "--formats", "torchscript,onnx")
    run(servekit, "archive")
    assert sorted(p.name for p in (work / "model_store").iterdir()) == ["tiny_onnx.mar", "tiny_ts.mar"]
    with zipfile.ZipFile(work / "model_store" / "tiny_onnx.mar") as archive:
        assert "handlers/tasks/classification.py" in archive.namelist()

    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    np.save(work / "x.npy", x)
    answer = json.loads(run(str(venv / "bin" / "python"), "-c", SERVE).stdout.strip().splitlines()[-1])
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).argmax(1).tolist()
    assert [p["class"] for p in answer["predictions"]] == expected
