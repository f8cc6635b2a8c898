"""The docs' Python snippets (docs/serving.md) run as written, against a live TorchServe (only its address is moved)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from servekit.serve.client import npy_bytes
from servekit.serve.torchserve import REPO_ROOT
from support.models import eager_predictions
from support.serving import LiveServer

pytestmark = pytest.mark.integration
README_ADDRESS = "127.0.0.1:8080"


def python_block(containing: str) -> str:
    """The ```python block of docs/serving.md that contains ``containing``."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "docs" / "serving.md").read_text(), re.S)
    [block] = [b for b in blocks if containing in b]
    return block


def test_the_triton_client_snippet_runs_as_written(live: LiveServer, built_models, tmp_path: Path) -> None:
    """From the folder TorchServe started in (key_file.json) after `make demo` (build/samples/)."""
    snippet = python_block("tritonclient.http")
    assert README_ADDRESS in snippet
    snippet = snippet.replace(README_ADDRESS, live.client.inference_url.removeprefix("http://"))
    shutil.copy(live.server.workdir / "key_file.json", tmp_path / "key_file.json")  # the long way's start folder
    built = built_models["digits_cnn"]
    (tmp_path / "build" / "samples").mkdir(parents=True)
    (tmp_path / "build" / "samples" / "digits_cnn.npy").write_bytes(npy_bytes(built.x_test[0]))
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = int(eager_predictions(built.model, built.x_test[:1])[0])
    assert result.stdout.startswith(f"[{expected}]"), result.stdout
