"""The commands of docs/tuning.md and docs/performance.md run as written (long: the `slow` marker, run by
`make test-slow` or `pytest -m slow`); each writes its report into a temporary folder, not the repo's."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from servekit.serve.torchserve import REPO_ROOT
from support.serving import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SERVEKIT = ".venv/bin/servekit"


def commands(page: str) -> list[str]:
    """Every servekit command line in the page's bash blocks left to this test (```bash slow own-test)."""
    blocks = re.findall(r"```bash[^\n]*\bown-test\b[^\n]*\n(.*?)```", (REPO_ROOT / "docs" / page).read_text(), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith(SERVEKIT)]


def run(command: str, cwd: Path, extra: list[str]) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).parent / "servekit")  # this venv's, wherever the test runs
    return subprocess.run(argv + extra, cwd=cwd, capture_output=True, text=True, timeout=3600)


def test_tuning_page_commands(built_models, tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk (apt-get install wrk)")
    shutil.copytree(built_models["digits_mlp"].directory, tmp_path / "build" / "digits_mlp")
    [command] = commands("tuning.md")
    result = run(command, tmp_path, ["--reports-dir", str(tmp_path / "reports")])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "written into" in result.stdout
    assert "batchSize" in (tmp_path / "build" / "digits_mlp" / "model-config.yaml").read_text()
    assert (tmp_path / "reports" / "tune_digits_mlp_onnx.md").exists()


@pytest.mark.parametrize("report", ["bench_text", "bench_images"])
def test_performance_page_commands(report: str, tmp_path: Path) -> None:
    require(shutil.which("wrk") is not None, "wrk (apt-get install wrk)")
    [command] = [c for c in commands("performance.md") if ("--text" in c) == (report == "bench_text")]
    result = run(command, REPO_ROOT, ["--reports-dir", str(tmp_path), "--build-dir", str(tmp_path / "build")])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Ratios, same run" in (tmp_path / f"{report}.md").read_text()
