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
from handlers.composition import encode_npy, member_probabilities
from handlers.contract import PROBABILITIES, HandlerConfig
from handlers.decode import NPY_TYPES, DecodedRequest, decode_request
from handlers.encode import JSON_CONTENT_TYPE, PredictionEncoder, encode_error, encode_predictions, softmax
from handlers.errors import AnsweredError, RequestError
from handlers.open_inference import BINARY_CONTENT_TYPE, HEADER_LENGTH, V2, V2Options, encode_v2, encode_v2_error

logger = logging.getLogger(__name__)

OK_STATUS = 200
OK_PHRASE = "OK"
NPY_CONTENT_TYPE = NPY_TYPES[0]


@dataclass(frozen=True)
class RequestInput:
    """One request as the worker hands it over: body, its content type, and the length of the JSON
    header when it uses the Open Inference Protocol's binary extension."""

    payload: Any
    content_type: str | None
    header_length: str | None = None


@dataclass
class StageTimes:
    """Milliseconds spent per stage for one batch, and the instances the model ran together."""

    decode_ms: float = 0.0
    infer_ms: float = 0.0
    encode_ms: float = 0.0
    instances: int = 0


@dataclass(frozen=True)
class Answer:
    """One request's answer: HTTP status, reason phrase, body and its content type."""

    status: int
    phrase: str
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()


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
        answers: list[Answer | None] = [None] * len(requests)
        started = time.perf_counter()
        accepted, batch = self._decode_and_validate(requests, answers)
        times.decode_ms = _ms_since(started)
        if batch is not None:
            times.instances = batch.shape[0]
            started = time.perf_counter()
            outputs = self._infer(batch, accepted, answers)
            times.infer_ms = _ms_since(started)
            if outputs is not None:
                started = time.perf_counter()
                self._encode(accepted, outputs, answers)
                times.encode_ms = _ms_since(started)
        missing = [idx for idx, answer in enumerate(answers) if answer is None]
        if missing:
            raise RuntimeError(f"requests {missing} got no answer")
        return answers, times  # type: ignore[return-value]

    def _decode_and_validate(self, requests: Sequence[RequestInput], answers: list[Answer | None]
                             ) -> tuple[list[tuple[int, DecodedRequest, np.ndarray]], np.ndarray | None]:
        """Per request: decode and check shape/dtype; then values once per batch. Rejects get their answer.

        Returns the accepted requests and their stacked batch (None when nothing was accepted).
        """
        contract = self.config.input
        accepted = []
        for idx, request in enumerate(requests):
            try:
                decoded = decode_request(request.payload, request.content_type, contract.name, request.header_length)
            except RequestError as error:
                answers[idx] = _error_answer(error, error.protocol)
                continue
            try:
                accepted.append((idx, decoded, contract.as_batch(decoded.array, self.config.max_instances)))
            except RequestError as error:
                answers[idx] = _error_answer(error, decoded.protocol)
        if not accepted:
            return accepted, None
        batch = _stack([array for _, _, array in accepted])
        if not contract.values_ok(batch):
            # Rare path: some request holds NaN/Inf or out-of-range values; find and answer them.
            accepted = [item for item in accepted if self._values_checked(*item, answers)]
            batch = _stack([array for _, _, array in accepted]) if accepted else None
        return accepted, batch

    def _infer(self, batch: np.ndarray, accepted: list[tuple[int, DecodedRequest, np.ndarray]],
               answers: list[Answer | None]) -> np.ndarray | None:
        """Run the batch once. A composed model's member failing or timing out answers every accepted request."""
        try:
            outputs = self.backend.run(batch)
        except AnsweredError as error:
            for idx, decoded, _ in accepted:
                answers[idx] = _error_answer(error, decoded.protocol)
            return None
        if outputs.shape[0] != batch.shape[0]:
            raise RuntimeError(f"model returned {outputs.shape[0]} rows for {batch.shape[0]} inputs")
        return outputs

    def _encode(self, accepted: list[tuple[int, DecodedRequest, np.ndarray]], outputs: np.ndarray,
                answers: list[Answer | None]) -> None:
        """Split the batch's outputs back to their requests, each in the protocol it was asked in."""
        if self.config.output == PROBABILITIES:
            self._encode_probabilities(accepted, outputs, answers)
            return
        rows = self.encoder.rows(outputs) if any(d.v2 is None for _, d, _ in accepted) else []
        start = 0
        for idx, decoded, array in accepted:
            stop = start + array.shape[0]
            if decoded.v2 is None:
                answers[idx] = Answer(OK_STATUS, OK_PHRASE, encode_predictions(rows[start:stop]))
            else:
                answers[idx] = self._v2_answer(outputs[start:stop], decoded.v2)
            start = stop

    def _v2_answer(self, logits: np.ndarray, options: V2Options) -> Answer:
        probabilities = softmax(np.asarray(logits, dtype=np.float64))
        body, header_length = encode_v2(probabilities, self.config.labels, self.model_name, options)
        if header_length is None:
            return Answer(OK_STATUS, OK_PHRASE, body)
        return Answer(OK_STATUS, OK_PHRASE, body, BINARY_CONTENT_TYPE, ((HEADER_LENGTH, str(header_length)),))

    @staticmethod
    def _encode_probabilities(accepted: list[tuple[int, DecodedRequest, np.ndarray]], outputs: np.ndarray,
                              answers: list[Answer | None]) -> None:
        """Each request's rows of class probabilities as float32 .npy (a workflow member's answer)."""
        probabilities = member_probabilities(outputs)
        start = 0
        for idx, _, array in accepted:
            stop = start + array.shape[0]
            answers[idx] = Answer(OK_STATUS, OK_PHRASE, encode_npy(probabilities[start:stop]), NPY_CONTENT_TYPE)
            start = stop

    def _values_checked(self, idx: int, decoded: DecodedRequest, array: np.ndarray,
                        answers: list[Answer | None]) -> bool:
        try:
            self.config.input.check_values(array)
            return True
        except RequestError as error:
            answers[idx] = _error_answer(error, decoded.protocol)
            return False


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _error_answer(error: AnsweredError, protocol: str) -> Answer:
    """The error in the format of the protocol the request spoke."""
    body = encode_v2_error(error.message) if protocol == V2 else encode_error(error)
    return Answer(error.status, error.phrase, body)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """One batch from per-request arrays (no copy for a single request)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
