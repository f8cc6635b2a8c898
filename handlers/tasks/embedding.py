"""Embedding: the vector per instance, optionally L2-normalised; binary when the client asks for it."""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from handlers.encode import encode_npy

NPY_CONTENT_TYPE = "application/x-npy"
EMBEDDING_KEY = "embedding"
NORM_FLOOR = 1e-12  # an all-zero vector stays zero instead of becoming NaN


def l2_normalized(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 length (float32)."""
    flat = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    norms = np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), NORM_FLOOR)
    return (flat / norms).reshape(np.shape(vectors)).astype(np.float32)


class Embedding:
    """The first output ``[n, dim]`` is the vector."""

    def __init__(self, output_name: str, normalize: bool = False) -> None:
        self.output_name = output_name
        self.normalize = normalize
        self.v2_outputs = (output_name,)

    def vectors(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """The batch's vectors as float32, normalised when configured."""
        vectors = np.asarray(outputs[0], dtype=np.float32)
        return l2_normalized(vectors) if self.normalize else vectors

    def json_rows(self, outputs: Sequence[np.ndarray]) -> list[str]:
        """``{"embedding": [...]}`` per instance."""
        return [json.dumps({EMBEDDING_KEY: row}, separators=(",", ":")) for row in self.vectors(outputs).tolist()]

    def binary(self, outputs: Sequence[np.ndarray]) -> tuple[bytes, str]:
        """float32 .npy ``[n, dim]``: 4 bytes per value instead of ~20 as JSON text."""
        return encode_npy(self.vectors(outputs)), NPY_CONTENT_TYPE

    def v2_tensors(self, outputs: Sequence[np.ndarray]) -> dict[str, tuple[str, list[int], Any]]:
        """The vectors as one FP32 tensor named after the model's output."""
        vectors = self.vectors(outputs)
        return {self.output_name: ("FP32", list(vectors.shape), vectors)}
