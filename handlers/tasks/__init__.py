"""What a model's outputs mean: one module per task turns a batch's outputs into answers.

Every task answers the same three ways: JSON rows (one object per instance), a binary body
(``Accept: application/x-npy``), and Open Inference Protocol (v2) tensors. Tasks that answer about the
request's own text (token classification, question answering) are ``RequestTask``s: they get one
request's outputs at a time, with its arrays (its own length) and its tokens (offsets into its text).
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from handlers.config import (CLASSIFICATION, EMBEDDING, QUESTION_ANSWERING, REGRESSION, TOKEN_CLASSIFICATION,
                             HandlerConfig)


class Task(Protocol):
    """Turns the model's outputs (in signature order, one row per instance) into answers."""

    v2_outputs: tuple[str, ...]  # the v2 output names a request may ask for

    def json_rows(self, outputs: Sequence[np.ndarray]) -> list[str]:
        """One JSON object (as text) per instance of the batch."""

    def binary(self, outputs: Sequence[np.ndarray]) -> tuple[bytes, str]:
        """The instances' answer as .npy (or .npz for several outputs) and its content type."""

    def v2_tensors(self, outputs: Sequence[np.ndarray]) -> dict[str, tuple[str, list[int], Any]]:
        """v2 outputs by name: datatype, shape, values."""


class RequestTask(Protocol):
    """A task whose answers depend on each request's own tokens: called once per request."""

    per_request: bool  # True
    v2_outputs: tuple[str, ...]

    def request_rows(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray], tokens: Any) -> list[str]:
        """The request's JSON objects: one per text (or question), or per instance of a token-id request."""

    def request_binary(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray]) -> tuple[bytes, str]:
        """The request's outputs cropped to its own length, as .npy/.npz."""

    def request_v2(self, outputs: Sequence[np.ndarray], arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, list[int], Any]]:
        """The request's v2 tensors, cropped to its own length."""


def make_task(config: HandlerConfig) -> Task | RequestTask:
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
    if config.task == TOKEN_CLASSIFICATION:
        from handlers.tasks.token_classification import TokenClassification

        return TokenClassification(config.labels, config.aggregation)
    if config.task == QUESTION_ANSWERING:
        from handlers.tasks.question_answering import QuestionAnswering

        return QuestionAnswering(config.signature.outputs, config.max_answer_length)
    raise ValueError(f"no task {config.task!r}")
