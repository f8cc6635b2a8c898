"""The served-on-GPU report reads which device each worker really loaded from the handler's own log line."""
from __future__ import annotations

import logging
from pathlib import Path

from servekit.measure.gpu_served import worker_description


def test_the_worker_log_line_names_the_device(tmp_path: Path, caplog) -> None:
    # The line handlers/handler.py logs when a worker is ready, as TorchServe writes it into model_log.log.
    from handlers import handler

    with caplog.at_level(logging.INFO, logger=handler.__name__):
        handler.logger.info("model %s ready: %s, task %s, signature %s", "cnn_gpu_onnx",
                            "onnxruntime 1.31.1 on CUDAExecutionProvider (device 0)", "classification", "image[3, 64, 64]")
    (tmp_path / "model_log.log").write_text("2026-12-04T10:00:00,000 [INFO ] W-9000-cnn_gpu_onnx_1.0-stdout "
                                            f"MODEL_LOG - {caplog.records[0].getMessage()}\n")
    assert worker_description(tmp_path, "cnn_gpu_onnx") == "onnxruntime 1.31.1 on CUDAExecutionProvider (device 0)"
    assert worker_description(tmp_path, "cnn_gpu_ts") == "not logged"
