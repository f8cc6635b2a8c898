"""Regression: the named output values with their shape, never a class."""
from __future__ import annotations

import io
import json
from typing import Any, Sequence

import numpy as np

from handlers.encode import encode_npy

NPY_CONTENT_TYPE = "application/x-npy"
NPZ_CONTENT_TYPE = "application/x-npz"
VALUE_KEY = "value"


def _plain(values: np.ndarray) -> Any:
    """One instance's values: a number for a scalar or a single value, nested lists otherwise.

    Each float32 prints as its shortest repr (3.2, not 3.200000047683716, float32's 3.2 in float64).
    """
    values = np.asarray(values, np.float32)
    shortest = np.array([float(str(v)) for v in values.ravel()]).reshape(values.shape)
    return float(shortest.reshape(())) if shortest.size == 1 and shortest.ndim <= 1 else shortest.tolist()


class Regression:
    """One output answers ``{"value": 3.2}``; several answer ``{"<output name>": ..., ...}``."""

    def __init__(self, output_names: Sequence[str]) -> None:
        self.names = tuple(output_names)
        self.v2_outputs = self.names

    def json_rows(self, outputs: Sequence[np.ndarray]) -> list[str]:
        """One object per instance."""
        if len(self.names) == 1:
            return [json.dumps({VALUE_KEY: _plain(row)}) for row in _float32(outputs[0])]
        columns = [_float32(output) for output in outputs]
        return [json.dumps({name: _plain(column[idx]) for name, column in zip(self.names, columns)})
                for idx in range(columns[0].shape[0])]

    def binary(self, outputs: Sequence[np.ndarray]) -> tuple[bytes, str]:
        """.npy of the one output ``[n, ...]``, or .npz of every output by name."""
        if len(self.names) == 1:
            return encode_npy(_float32(outputs[0])), NPY_CONTENT_TYPE
        buffer = io.BytesIO()
        np.savez(buffer, **{name: _float32(output) for name, output in zip(self.names, outputs)})
        return buffer.getvalue(), NPZ_CONTENT_TYPE

    def v2_tensors(self, outputs: Sequence[np.ndarray]) -> dict[str, tuple[str, list[int], Any]]:
        """Every output as FP32 with its own shape."""
        return {name: ("FP32", list(np.shape(output)), _float32(output)) for name, output in zip(self.names, outputs)}


def _float32(output: np.ndarray) -> np.ndarray:
    return np.asarray(output, dtype=np.float32)
