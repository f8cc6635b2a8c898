"""What a model's outputs mean: one module per task turns a batch's outputs into answers.

Every task answers the same three ways: JSON rows (one object per instance), a binary body
(``Accept: application/x-npy``), and Open Inference Protocol (v2) tensors.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from handlers.config import CLASSIFICATION, EMBEDDING, REGRESSION, HandlerConfig


class Task(Protocol):
    """Turns the model's outputs (in signature order, one row per instance) into answers."""

    v2_outputs: tuple[str, ...]  # the v2 output names a request may ask for

    def json_rows(self, outputs: Sequence[np.ndarray]) -> list[str]:
        """One JSON object (as text) per instance of the batch."""

    def binary(self, outputs: Sequence[np.ndarray]) -> tuple[bytes, str]:
        """The instances' answer as .npy (or .npz for several outputs) and its content type."""

    def v2_tensors(self, outputs: Sequence[np.ndarray]) -> dict[str, tuple[str, list[int], Any]]:
        """v2 outputs by name: datatype, shape, values."""


def make_task(config: HandlerConfig) -> Task:
    """The task module that model-config.yaml's ``handler.task`` names."""
    if config.task == CLASSIFICATION:
        from handlers.tasks.classification import Classification

        return Classification(config.labels, config.top_k, config.multi_label, config.threshold)
    if config.task == REGRESSION:
        from handlers.tasks.regression import Regression

        return Regression(config.signature.outputs)
    if config.task == EMBEDDING:
        from handlers.tasks.embedding import Embedding

        return Embedding(config.signature.outputs[0], config.normalize)
    raise ValueError(f"no task {config.task!r}")
