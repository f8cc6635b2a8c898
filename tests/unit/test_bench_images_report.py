"""The image benchmark's headline ratios and report, from a recorded run's numbers."""
from __future__ import annotations

import pytest

from servekit.measure.bench.images import image_ratios, render


def document(throughputs: dict[str, float]) -> dict:
    results = {kind: {"concurrency": 16, "requests": 0, "duration_s": 1.0, "errors": 0, "throughput": value,
                      "p50_ms": 100.0, "p90_ms": 500.0, "p99_ms": 1000.0 / value} for kind, value in throughputs.items()}
    return {"setting": {"batch_size": 16, "max_batch_delay_ms": 10, "workers": 1}, "concurrency": 16, "threads": 2,
            "cores": 2, "duration_s": 45, "body_bytes": 100_000, "load_before": (1.0, 1.0, 1.0),
            "load_after": (2.0, 1.0, 1.0), "gate": {"agreement": 0.97, "images": 64, "passed": True},
            "results": results, "in_process_images_per_s": {"qdq": 145.0, "onnx": 58.1}}


def test_ratios_take_the_docs_style_handler_at_its_best_thread_count() -> None:
    doc = document({"ours_onnx": 45.0, "ours_qdq": 103.2, "docs_t1": 24.0, "docs_t2": 9.0, "noop": 4004.5,
                    "litserve": 33.0})
    ratios = image_ratios(doc)
    assert ratios["docs_best"] == "docs_t1" and ratios["best_ours"] == "ours_qdq"
    assert ratios["fp32_over_docs"] == pytest.approx(45.0 / 24.0)
    assert ratios["best_over_docs"] == pytest.approx(103.2 / 24.0)
    assert ratios["fp32_over_litserve"] == pytest.approx(45.0 / 33.0)
    assert ratios["best_over_in_process"] == pytest.approx(103.2 / 145.0)
    doc["ratios"] = ratios
    text = render(doc)
    assert "**1.88x** (target 1.8x" in text and "**4.30x** (target 3.5x)" in text and "**1.36x** (target 1.3x)" in text
    assert "load (1-minute average, other agents share the cores): 1.0 before, 2.0 after" in text


def test_without_litserve_or_a_passing_gate_the_report_says_so() -> None:
    doc = document({"ours_onnx": 45.0, "docs_t1": 24.0, "docs_t2": 30.0, "noop": 4004.5})
    doc["gate"] = {"agreement": 0.5, "images": 64, "passed": False}
    doc["in_process_images_per_s"] = {"onnx": 58.1}
    doc["ratios"] = image_ratios(doc)
    assert doc["ratios"]["docs_best"] == "docs_t2" and "fp32_over_litserve" not in doc["ratios"]
    assert "rejected, no INT8 row" in render(doc) and "LitServe /" not in render(doc)
