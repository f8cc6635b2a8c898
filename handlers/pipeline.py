"""The batched request path: decode -> validate -> batch -> infer -> split -> encode.

Per-request steps (decode, validate, encode) fail per request; the per-batch step (infer) runs
once for every request that survived, so one bad request never costs its batch-mates.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from handlers.backends import Backend
from handlers.contract import HandlerConfig
from handlers.decode import decode_payload
from handlers.encode import encode_error, encode_predictions, predictions
from handlers.errors import RequestError

logger = logging.getLogger(__name__)

OK_STATUS = 200
OK_PHRASE = "OK"


@dataclass(frozen=True)
class RequestInput:
    """One request as the worker hands it over: body and its content type."""

    payload: Any
    content_type: str | None


@dataclass(frozen=True)
class Answer:
    """One request's answer: HTTP status, reason phrase, JSON body."""

    status: int
    phrase: str
    body: bytes


class ClassificationPipeline:
    """Runs a batch of requests through one model, isolating per-request errors."""

    def __init__(self, config: HandlerConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend

    def decode_and_validate(self, request: RequestInput) -> np.ndarray:
        """One request -> ``[n, *shape]`` array in the contract dtype, or a RequestError."""
        raw = decode_payload(request.payload, request.content_type, self.config.input.name)
        return self.config.input.as_batch(raw, self.config.max_instances)

    def run(self, requests: Sequence[RequestInput]) -> tuple[list[Answer], int]:
        """Answer every request; also return how many instances went through the model at once."""
        answers: list[Answer | None] = [None] * len(requests)
        arrays: list[np.ndarray] = []
        owners: list[int] = []
        for idx, request in enumerate(requests):
            try:
                arrays.append(self.decode_and_validate(request))
                owners.append(idx)
            except RequestError as error:
                answers[idx] = Answer(error.status, error.phrase, encode_error(error))
        instances = 0
        if arrays:
            batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            instances = batch.shape[0]
            outputs = self.backend.run(batch)
            if outputs.shape[0] != instances:
                raise RuntimeError(f"model returned {outputs.shape[0]} rows for {instances} inputs")
            rows = predictions(outputs, self.config.labels, self.config.top_k)
            start = 0
            for idx, array in zip(owners, arrays):
                stop = start + array.shape[0]
                answers[idx] = Answer(OK_STATUS, OK_PHRASE, encode_predictions(rows[start:stop]))
                start = stop
        missing = [idx for idx, answer in enumerate(answers) if answer is None]
        if missing:
            raise RuntimeError(f"requests {missing} got no answer")
        return answers, instances  # type: ignore[return-value]
