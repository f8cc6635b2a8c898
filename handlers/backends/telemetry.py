"""ONNX Runtime must not phone home from a server."""
from __future__ import annotations

import os

ORT_TELEMETRY_OPT_OUT = "ORT_DISABLE_TELEMETRY"


def opt_out_of_ort_telemetry() -> None:
    """Keep ONNX Runtime from phoning home; call before onnxruntime is imported.

    Its Linux wheels (1.32) send telemetry to Microsoft and keep a device id under ~/.cache unless
    ORT_DISABLE_TELEMETRY is set when it starts. A server must not phone home, and in a pod with a
    read-only filesystem the device id becomes a warning per worker. A value the user set wins.
    """
    os.environ.setdefault(ORT_TELEMETRY_OPT_OUT, "1")
