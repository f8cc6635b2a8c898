"""Classification: class, label and top-k probabilities (softmax), or several labels at once (sigmoid + threshold)."""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from handlers.encode import PredictionEncoder, encode_npy, label_name, softmax
from handlers.bodies.open_inference import OUTPUTS, classification_tensors

NPY_CONTENT_TYPE = "application/x-npy"
MULTI_LABEL_OUTPUTS = ("probabilities", "predicted")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (exp of a large negative never overflows)."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


class Classification:
    """The first output holds one logit per class."""

    def __init__(self, labels: Sequence[str], top_k: int, multi_label: bool = False, threshold: float = 0.5) -> None:
        self.labels = list(labels)
        self.multi_label = multi_label
        self.threshold = threshold
        self.encoder = PredictionEncoder(labels, top_k)
        self.v2_outputs = MULTI_LABEL_OUTPUTS if multi_label else OUTPUTS

    def probabilities(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """Softmax over classes, or per-class sigmoid for multi-label, in float64."""
        logits = np.asarray(outputs[0], dtype=np.float64)
        return sigmoid(logits) if self.multi_label else softmax(logits)

    def json_rows(self, outputs: Sequence[np.ndarray]) -> list[str]:
        """Single-label: class, label, top_k; multi-label: every class at or above the threshold."""
        if not self.multi_label:
            return self.encoder.rows(outputs[0])
        rows = []
        for probabilities in self.probabilities(outputs).round(6):
            chosen = np.flatnonzero(probabilities >= self.threshold).tolist()
            rows.append(json.dumps({"classes": chosen, "labels": [label_name(self.labels, c) for c in chosen],
                                    "probabilities": probabilities.tolist()}, separators=(",", ":")))
        return rows

    def binary(self, outputs: Sequence[np.ndarray]) -> tuple[bytes, str]:
        """Class probabilities as float32 .npy ``[n, classes]``."""
        return encode_npy(self.probabilities(outputs).astype(np.float32)), NPY_CONTENT_TYPE

    def v2_tensors(self, outputs: Sequence[np.ndarray]) -> dict[str, tuple[str, list[int], Any]]:
        """probabilities, class, label; multi-label: probabilities and which classes are predicted."""
        probabilities = self.probabilities(outputs)
        if not self.multi_label:
            return classification_tensors(probabilities, self.labels)
        predicted = probabilities >= self.threshold
        return {"probabilities": ("FP32", list(probabilities.shape), probabilities.astype(np.float32)),
                "predicted": ("BOOL", list(predicted.shape), predicted)}
