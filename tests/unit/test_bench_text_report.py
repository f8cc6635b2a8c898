"""The text benchmark's ratios and report, from a recorded run's numbers."""
from __future__ import annotations

import pytest

from servekit.measure.bench.text import render, text_ratios


def document(throughputs: dict[str, float]) -> dict:
    results = {kind: {"concurrency": 16, "requests": 0, "duration_s": 1.0, "errors": 0, "throughput": value,
                      "p50_ms": 50.0, "p90_ms": 80.0, "p99_ms": 100.0} for kind, value in throughputs.items()}
    return {"setting": {"batch_size": 16, "max_batch_delay_ms": 10, "workers": 1}, "concurrency": 16, "duration_s": 30,
            "cores": 2, "ours_threads": 2, "median_tokens": 24, "load_before": (1.5, 1, 1), "load_after": (2.5, 1, 1),
            "gate": {"agreement": 1.0, "accuracy_fp32": 0.95, "accuracy_int8": 0.95, "passed": True},
            "results": results, "in_process": {"requests_per_s": 400.0, "padding_efficiency": 0.9},
            "padding": {"padded_to_longest": 0.43, "padded_to_max": 0.21, "mean_tokens": 27.0}}


def test_ratios_against_the_best_docs_style_thread_count_and_litserve() -> None:
    doc = document({"ours_fp32": 250.0, "ours_int8": 400.0, "docs_t1": 100.0, "docs_t2": 80.0, "noop": 3000.0,
                    "litserve": 200.0})
    doc["ratios"] = ratios = text_ratios(doc)
    assert ratios["docs_best"] == "docs_t1" and ratios["best_ours"] == "ours_int8"
    assert ratios["fp32_over_docs"] == pytest.approx(2.5) and ratios["best_over_docs"] == pytest.approx(4.0)
    assert ratios["fp32_over_litserve"] == pytest.approx(1.25)
    text = render(doc)
    assert "**2.50x** (target 2x)" in text and "**4.00x** (target 3.5x)" in text and "**1.25x** (target 1.3x)" in text
    assert "**0.90** with length-aware sub-batches, against 0.43 padded to each batch's longest" in text
