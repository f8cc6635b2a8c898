"""Turn model outputs into per-request JSON answers."""
from __future__ import annotations

import io
import json
from typing import Sequence

import numpy as np

from handlers.errors import AnsweredError

JSON_CONTENT_TYPE = "application/json"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class PredictionEncoder:
    """Per-row JSON for class, label and top-k probabilities, built without per-row json.dumps."""

    def __init__(self, labels: Sequence[str], top_k: int) -> None:
        self.labels = list(labels)
        self.top_k = top_k
        self._label_json: dict[int, str] = {}

    def _label(self, index: int) -> str:
        cached = self._label_json.get(index)
        if cached is None:
            cached = self._label_json[index] = json.dumps(label_name(self.labels, index))
        return cached

    def rows(self, logits: np.ndarray) -> list[str]:
        """One JSON object (as text) per row of logits."""
        probs = softmax(np.asarray(logits, dtype=np.float64))
        k = min(self.top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top_probs = np.take_along_axis(probs, order, axis=1).round(6).tolist()
        out = []
        for ranked, ranked_probs in zip(order.tolist(), top_probs):
            top = ",".join(f'{{"class":{c},"label":{self._label(c)},"probability":{p!r}}}'
                           for c, p in zip(ranked, ranked_probs))
            out.append(f'{{"class":{ranked[0]},"label":{self._label(ranked[0])},"top_k":[{top}]}}')
        return out


def predictions(logits: np.ndarray, labels: Sequence[str], top_k: int) -> list[dict]:
    """One dict per row: predicted class, its label and the top-k probabilities (as served)."""
    return [json.loads(row) for row in PredictionEncoder(labels, top_k).rows(logits)]


def encode_predictions(rows: Sequence[str]) -> bytes:
    """The body of a successful answer from encoded rows (bytes, so the worker does not re-serialize)."""
    return ('{"predictions":[' + ",".join(rows) + "]}").encode()


def encode_error(error: AnsweredError) -> bytes:
    """The body of an error answer (4xx for bad requests, 5xx when a composed model's member fails)."""
    return json.dumps({"error": error.to_json()}, separators=(",", ":")).encode()


def label_name(labels: Sequence[str], index: int) -> str:
    """The label of class ``index``, or the index itself when the model has more classes than labels."""
    return labels[index] if index < len(labels) else str(int(index))


def encode_npy(array: np.ndarray) -> bytes:
    """An .npy body (numpy's own writer; our decoder reads it back without pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
