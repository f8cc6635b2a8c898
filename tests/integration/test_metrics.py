"""Handler metrics reach TorchServe's Prometheus endpoint."""
from __future__ import annotations

import re
import time

import pytest

from support.serving import LiveServer

pytestmark = pytest.mark.integration


def test_stage_times_batch_size_and_errors_are_scraped(live: LiveServer) -> None:
    live.client.register("digits_cnn_ts.mar", model_name="metered", batch_size=4, max_batch_delay_ms=2)
    try:
        live.client.predict_json("metered", [[[0.5] * 8] * 8])
        for _ in range(2):
            assert live.client.predict_raw("metered", b"{nope", "application/json").status_code == 400
        assert live.client.predict_raw("metered", b"GIF89a", "image/gif").status_code == 415
        deadline, text = time.monotonic() + 15, ""
        while time.monotonic() < deadline and 'Status="415"' not in text:
            text = "\n".join(line for line in live.client.metrics().splitlines() if 'ModelName="metered"' in line)
            time.sleep(0.5)
        for name in ("HandlerDecodeMs", "HandlerInferMs", "HandlerEncodeMs", "HandlerBatchInstances"):
            assert re.search(rf"^{name}{{", text, re.M), f"{name} missing from:\n{text}"
        errors = dict(re.findall(r'^HandlerRequestErrors{Status="(\d+)".*} ([\d.]+)$', text, re.M))
        assert float(errors["400"]) == 2 and float(errors["415"]) == 1
    finally:
        live.client.unregister("metered")
