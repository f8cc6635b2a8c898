"""Turn model outputs into per-request JSON answers."""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from handlers.errors import RequestError

JSON_CONTENT_TYPE = "application/json"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predictions(logits: np.ndarray, labels: Sequence[str], top_k: int) -> list[dict]:
    """One dict per row: predicted class, its label and the top-k probabilities."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    out = []
    for row, ranked in zip(probs, order):
        top = [{"class": int(c), "label": _label(labels, c), "probability": round(float(row[c]), 6)} for c in ranked]
        out.append({"class": top[0]["class"], "label": top[0]["label"], "top_k": top})
    return out


def encode_predictions(rows: list[dict]) -> bytes:
    """The body of a successful answer (bytes, so the worker does not re-serialize it)."""
    return json.dumps({"predictions": rows}, separators=(",", ":")).encode()


def encode_error(error: RequestError) -> bytes:
    """The body of a 4xx answer."""
    return json.dumps({"error": error.to_json()}, separators=(",", ":")).encode()


def _label(labels: Sequence[str], index: int) -> str:
    return labels[index] if index < len(labels) else str(int(index))
