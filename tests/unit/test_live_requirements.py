"""Live tests skip on a developer's machine without Java or wrk, but fail under CI=true: a CI run that
tested nothing live must not pass."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servekit.serve.torchserve import REPO_ROOT

BENCH_SMOKE = "tests/integration/test_bench_smoke.py"


def _run_without_java_or_wrk(ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(Path(sys.executable).parent)  # the venv only: no java, no wrk
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow",
                           BENCH_SMOKE],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_live_tests_fail_under_ci_when_tools_are_missing(ci: str) -> None:
    result = _run_without_java_or_wrk(ci)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "2 errors" in result.stdout and "live tests must run in CI" in result.stdout  # failed in setup


def test_live_tests_skip_without_ci() -> None:
    result = _run_without_java_or_wrk(None)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "2 skipped" in result.stdout
