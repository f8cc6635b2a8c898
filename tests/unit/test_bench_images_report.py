"""The image benchmark's headline ratios and report, from a recorded run's numbers."""
from __future__ import annotations

import pytest

from servekit.measure.bench.images import TARGETS, image_ratios, render


def document(throughputs: dict[str, float]) -> dict:
    results = [{"label": t.label, "runs": [{"concurrency": 16, "throughput": throughputs[t.kind], "p50_ms": 100.0,
                                            "p99_ms": 1000.0 / throughputs[t.kind], "errors": 0}]} for t in TARGETS]
    return {"setting": {"batch_size": 16, "max_batch_delay_ms": 5, "workers": 1}, "threads": 1, "cores": 2,
            "body_bytes": 100_000, "results": results, "in_process_images_per_s": {"qdq": 145.0, "onnx": 58.1}}


def test_ratios_take_the_best_of_ours_against_the_reference_and_its_own_ceiling() -> None:
    doc = document({"ours_qdq": 103.2, "ours_onnx": 41.8, "ours_qdq_pool2": 113.0, "reference_ts": 7.9,
                    "noop": 4004.5})
    ratios = image_ratios(doc, [16])
    assert ratios["best_ours"] == "ours qdq int8, 2 decode threads"
    assert ratios["ours_over_reference"] == pytest.approx(113.0 / 7.9)
    assert ratios["ours_over_in_process"] == pytest.approx(113.0 / 145.0)
    assert ratios["decode_pool2_over_serial"] == pytest.approx(113.0 / 103.2)
    doc["ratios"] = ratios
    assert "**14.30x** the reference handler" in render(doc) and "**78%**" in render(doc)
