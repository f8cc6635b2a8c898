"""Model optimizations: pruning and quantization (PyTorch and ONNX Runtime), FP16 conversion."""
