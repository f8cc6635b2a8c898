"""ONNX Runtime must not phone home from our workers or tools (its Linux wheels send telemetry and
keep a device id under the user's cache unless told not to before it starts)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LOAD_A_SESSION = """
import sys
{imports}
import onnxruntime as ort
ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
"""


# ONNX Runtime stays quiet by itself where these say it runs in CI; the check must not depend on that.
CI_MARKERS = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL",
              "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER")


def _cache_files_after(imports: str, model: Path, cache: Path, **env: str) -> list[Path]:
    environment = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", *CI_MARKERS)}
    environment.update(XDG_CACHE_HOME=str(cache), HOME=str(cache), **env)
    subprocess.run([sys.executable, "-c", LOAD_A_SESSION.format(imports=imports), str(model)],
                   env=environment, check=True, capture_output=True)
    return [p for p in cache.rglob("*") if p.is_file()]


@pytest.mark.parametrize("imports", ["import handlers.backends.onnxruntime", "import servekit"])
def test_our_code_opts_out_before_onnxruntime_starts(imports: str, built_models, tmp_path: Path) -> None:
    model = built_models["digits_mlp"].directory / "model.onnx"
    assert _cache_files_after(imports, model, tmp_path) == []


def test_without_the_opt_out_onnxruntime_writes_a_device_id(built_models, tmp_path: Path) -> None:
    """The control: proves the check above can fail (and tells us when ORT stops doing this)."""
    model = built_models["digits_mlp"].directory / "model.onnx"
    written = _cache_files_after("", model, tmp_path)
    assert any(p.name == "deviceid" for p in written), written
