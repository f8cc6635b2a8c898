"""The batched request path: decode -> validate -> batch -> infer -> split -> encode.

Per-request steps (decode, validate, encode) fail per request; the per-batch step (infer) runs
once for every request that survived, so one bad request never costs its batch-mates.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from handlers.backends import Backend
from handlers.contract import HandlerConfig
from handlers.decode import V2, DecodedRequest, decode_request
from handlers.encode import PredictionEncoder, encode_error, encode_predictions
from handlers.errors import RequestError

logger = logging.getLogger(__name__)

OK_STATUS = 200
OK_PHRASE = "OK"


@dataclass(frozen=True)
class RequestInput:
    """One request as the worker hands it over: body and its content type."""

    payload: Any
    content_type: str | None


@dataclass
class StageTimes:
    """Milliseconds spent per stage for one batch, and the instances the model ran together."""

    decode_ms: float = 0.0
    infer_ms: float = 0.0
    encode_ms: float = 0.0
    instances: int = 0


@dataclass(frozen=True)
class Answer:
    """One request's answer: HTTP status, reason phrase, JSON body."""

    status: int
    phrase: str
    body: bytes


class ClassificationPipeline:
    """Runs a batch of requests through one model, isolating per-request errors."""

    def __init__(self, config: HandlerConfig, backend: Backend, model_name: str = "model") -> None:
        self.config = config
        self.backend = backend
        self.model_name = model_name
        self.encoder = PredictionEncoder(config.labels, config.top_k)

    def run(self, requests: Sequence[RequestInput]) -> tuple[list[Answer], StageTimes]:
        """Answer every request; also say how long each stage took and how many instances ran together."""
        times = StageTimes()
        started = time.perf_counter()
        answers: list[Answer | None] = [None] * len(requests)
        accepted: list[tuple[int, np.ndarray]] = []
        decoded: dict[int, DecodedRequest] = {}
        for idx, request in enumerate(requests):
            try:
                decoded[idx] = decode_request(request.payload, request.content_type, self.config.input.name)
                accepted.append((idx, self.config.input.as_batch(decoded[idx].array, self.config.max_instances)))
            except RequestError as error:
                answers[idx] = _error_answer(error)
        batch = _stack([array for _, array in accepted])
        if batch is not None and not self.config.input.values_ok(batch):
            # Rare path: some request holds NaN/Inf or out-of-range values; find and answer them.
            accepted = [(idx, array) for idx, array in accepted if self._values_checked(idx, array, answers)]
            batch = _stack([array for _, array in accepted])
        instances = times.instances = 0 if batch is None else batch.shape[0]
        times.decode_ms = _ms_since(started)
        if batch is not None:
            started = time.perf_counter()
            outputs = self.backend.run(batch)
            times.infer_ms = _ms_since(started)
            if outputs.shape[0] != instances:
                raise RuntimeError(f"model returned {outputs.shape[0]} rows for {instances} inputs")
            started = time.perf_counter()
            rows = self.encoder.rows(outputs)
            start = 0
            for idx, array in accepted:
                stop = start + array.shape[0]
                if decoded[idx].protocol == V2:
                    body = self.encoder.v2(outputs[start:stop], self.model_name, decoded[idx].request_id)
                else:
                    body = encode_predictions(rows[start:stop])
                answers[idx] = Answer(OK_STATUS, OK_PHRASE, body)
                start = stop
            times.encode_ms = _ms_since(started)
        missing = [idx for idx, answer in enumerate(answers) if answer is None]
        if missing:
            raise RuntimeError(f"requests {missing} got no answer")
        return answers, times  # type: ignore[return-value]

    def _values_checked(self, idx: int, array: np.ndarray, answers: list[Answer | None]) -> bool:
        try:
            self.config.input.check_values(array)
            return True
        except RequestError as error:
            answers[idx] = _error_answer(error)
            return False


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _error_answer(error: RequestError) -> Answer:
    return Answer(error.status, error.phrase, encode_error(error))


def _stack(arrays: list[np.ndarray]) -> np.ndarray | None:
    """One batch from per-request arrays (no copy for a single request)."""
    if not arrays:
        return None
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
