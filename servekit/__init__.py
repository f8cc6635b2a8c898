"""Build-time tools: train demo models, export and validate, write model configs, drive TorchServe."""

from handlers.backends.telemetry import opt_out_of_ort_telemetry

# Validation, quantization and the benchmarks run ONNX Runtime here too, and so do the TorchServe
# workers we start, which inherit this environment.
opt_out_of_ort_telemetry()
