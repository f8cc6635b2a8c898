"""The build path's defaults that the command line shows, in one place that imports nothing heavy.

``servekit --help`` prints them without importing torch (a second of start-up, and its warnings); the
modules that use them (export, validate, prune, variants, options) import them from here.
"""
from __future__ import annotations

from pathlib import Path

FORMATS = ("torchscript", "onnx", "aoti")  # model.pt, model.onnx, model.pt2
OUTPUT_NAME = "logits"                      # the one output's name when none is declared
DEFAULT_RTOL = 1e-3                         # export vs eager PyTorch
DEFAULT_ATOL = 1e-5
DEFAULT_PRUNE_AMOUNT = 0.2                  # share of conv/linear weights zeroed (global L1)
MAX_ACCURACY_DROP = 1.0                     # variant gate: accuracy points below FP32
MIN_AGREEMENT = 0.99                        # variant gate: top-1 agreement with FP32
DEFAULT_BUILD_DIR = Path("build")
DEFAULT_MODEL_STORE = Path("model_store")
DEFAULT_REPORTS_DIR = Path("reports")
POOLINGS = ("mean", "cls")                  # --transformers on a base model: how token states become one vector
DEFAULT_MAX_SECONDS = 10.0                  # --transformers audio: the longest clip
MAX_RELATIVE_ERROR = 0.05                   # non-classification variant gate: worst |variant - FP32| / max |FP32|
MIN_R2 = 0.99                               # regression variant gate: R^2 of the variant's outputs against FP32's
