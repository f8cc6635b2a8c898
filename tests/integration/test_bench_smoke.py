"""The benchmark tool runs end to end for a few seconds; performance itself is never asserted."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from servekit.measure.bench.main import run_benchmark
from servekit.measure.bench.run import Setting
from servekit.measure.bench.sweep import run_sweep
from servekit.serve.torchserve import torchserve_available
from support.serving import require

# Slow: each run builds its models (a .pt2 compile), starts its own TorchServe and drives every target
# with wrk; about a minute and a half on 2 cores. `make nightly` runs it.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _live_tools() -> None:
    require(shutil.which("wrk") is not None, "wrk (make tools installs it)")
    require(torchserve_available(), "Java 17 or the torchserve launcher (TorchServe needs both)")


def test_bench_measures_every_target_and_writes_reports(tmp_path: Path) -> None:
    document = run_benchmark(tmp_path / "build", tmp_path / "reports", concurrencies=[2], duration_s=1,
                             setting=Setting(batch_size=4, max_batch_delay_ms=2), models=("digits_mlp",))
    labels = {r["label"] for r in document["results"]}
    assert labels == {"ours ts (JSON)", "ours onnx (JSON)", "ours aoti (JSON)", "ours onnx (npy)", "plain ts (JSON)",
                      "no-op (JSON)"}
    for result in document["results"]:
        [run] = result["runs"]
        assert run["requests"] > 0 and run["errors"] == 0, result
    ratios = document["ratios"]["digits_mlp"]
    assert ratios["ours_over_plain_at_c"] > 0 and ratios["ours_over_in_process_best"] > 0
    assert document["ceilings"]["digits_mlp"]["in_process_onnx"] > 0
    assert document["ceilings"]["digits_mlp"]["in_process_aoti"] > 0
    report = (tmp_path / "reports" / "bench.md").read_text()
    assert "| plain ts (JSON) |" in report and "ours / no-op" in report
    assert (tmp_path / "reports" / "bench.png").stat().st_size > 0
    assert json.loads((tmp_path / "reports" / "bench.json").read_text())["setting"]["batch_size"] == 4


def test_sweep_recommends_settings_with_a_curl_line(tmp_path: Path) -> None:
    best = run_sweep("digits_mlp", tmp_path / "build", tmp_path / "reports", batch_sizes=[4, 8], delays=[2],
                     workers=[1], threads=[1], concurrency=4, duration_s=1)
    assert best.setting.batch_size in (4, 8) and best.result.errors == 0
    report = (tmp_path / "reports" / "bench_sweep.md").read_text()
    assert "**(recommended)**" in report and "max_batch_delay=2&initial_workers=1" in report
