"""The batched request path: decode -> validate -> batch -> infer -> split -> encode.

Per-request steps (decode, validate, encode) fail per request; the per-batch step (infer) runs
once for every request that survived, so one bad request never costs its batch-mates.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from handlers.backends import Backend
from handlers.bodies.common import media_type
from handlers.bodies.decode import decode_request
from handlers.bodies.npy import NPY_TYPES
from handlers.bodies.open_inference import (BINARY_CONTENT_TYPE, HEADER_LENGTH, PLAIN, V2, V2Options, encode_v2,
                                            encode_v2_error)
from handlers.bodies.request import BodyOptions, DecodedRequest, RequestInput
from handlers.bodies.text import check_count
from handlers.composition import member_probabilities
from handlers.config import PROBABILITIES, QUESTION_ANSWERING, HandlerConfig
from handlers.encode import JSON_CONTENT_TYPE, encode_error, encode_npy, encode_predictions
from handlers.errors import (AnsweredError, AnswerTooLarge, MalformedRequest, NonFiniteOutput, RequestError, TooComplex,
                             quoted)
from handlers.image import PixelBudget
from handlers.signature import Range
from handlers.sub_batches import Item, SubBatchPolicy, plan_sub_batches
from handlers.tasks import Task, make_task
from handlers.thread_policy import decode_threads
from handlers.text_encoder import TextEncoder

logger = logging.getLogger(__name__)

OK_STATUS = 200
OK_PHRASE = "OK"
NPY_CONTENT_TYPE = NPY_TYPES[0]
BINARY_ANSWER_TYPES = ("application/x-npy", "application/npy", "application/x-npz", "application/npz")


@dataclass
class StageTimes:
    """Milliseconds spent per stage for one batch, and the instances the model ran together."""

    decode_ms: float = 0.0
    infer_ms: float = 0.0
    encode_ms: float = 0.0
    instances: int = 0
    sub_batches: int = 0
    real_tokens: int = 0  # dynamic inputs: each request's length x its instances, summed
    computed_tokens: int = 0  # what the model computed: each sub-batch's instances x its longest

    @property
    def padding_efficiency(self) -> float | None:
        """Real tokens / computed tokens (1.0: no padding); None for a model without a dynamic dimension."""
        return self.real_tokens / self.computed_tokens if self.computed_tokens else None


@dataclass(frozen=True)
class Answer:
    """One request's answer: HTTP status, reason phrase, body and its content type."""

    status: int
    phrase: str
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    protocol: str = PLAIN  # the protocol the request spoke (an error in its place uses the same)


Batch = dict[str, np.ndarray]  # input name -> [n, ...]
Accepted = tuple[int, DecodedRequest, Batch, bool]  # request index, decoded, checked arrays, binary answer wanted


class InferencePipeline:
    """Runs a batch of requests through one model, isolating per-request errors; the task shapes the answers."""

    def __init__(self, config: HandlerConfig, backend: Backend, model_name: str = "model",
                 task: Task | None = None, text_encoder: TextEncoder | None = None) -> None:
        self.config = config
        self.signature = config.signature
        self.backend = backend
        self.model_name = model_name
        self.task = task if task is not None else make_task(config)
        self.text_encoder = text_encoder  # set when the archive ships a tokenizer.json
        self.images = self.signature.images
        self.body_options = BodyOptions(self.signature.names, tuple(self.task.v2_outputs), text_encoder is not None,
                                        self.images, config.max_instances, self.signature.audio or None,
                                        config.task == QUESTION_ANSWERING,
                                        text_encoder.max_chars if text_encoder is not None else None)
        self.per_request = bool(getattr(self.task, "per_request", False))
        # Decoded image pixels one batch may spend: the smallest budget of the model's image inputs.
        self.batch_pixels = min((image.max_batch_pixels for image in self.images.values()), default=None)
        decoders = decode_threads(config.decode_threads, config.workers)
        self.decode_pool = ThreadPoolExecutor(decoders, "decode") if self.images and decoders > 1 else None
        self.sub_batch_policy = SubBatchPolicy(config.min_padding_efficiency, config.max_batch_tokens,
                                               equal_lengths_only=not config.padding_invariant)

    def run(self, requests: Sequence[RequestInput]) -> tuple[list[Answer], StageTimes]:
        """Answer every request; also say how long each stage took and how many instances ran together."""
        times = StageTimes()
        answers: list[Answer | None] = [None] * len(requests)
        started = time.perf_counter()
        accepted = self._decode_and_validate(requests, answers)
        batches = [self._stacked(group, answers) for group in self._sub_batches(accepted, times)]
        times.decode_ms = _ms_since(started)
        for group, batch in batches:
            if batch is None:
                continue
            times.instances += _rows(batch)
            started = time.perf_counter()
            outputs = self._infer(batch, group, answers)
            times.infer_ms += _ms_since(started)
            if outputs is not None:
                started = time.perf_counter()
                self._encode(group, outputs, answers)
                times.encode_ms += _ms_since(started)
        missing = [idx for idx, answer in enumerate(answers) if answer is None]
        if missing:
            raise RuntimeError(f"requests {missing} got no answer")
        return [self._bounded(answer) for answer in answers], times  # type: ignore[arg-type]

    def _bounded(self, answer: Answer) -> Answer:
        """The answer, or a 413 in its place when its body would pass the response size limit (TorchServe's
        frontend would drop the worker and fail every request of the batch)."""
        if len(answer.body) <= self.config.max_response_bytes:
            return answer
        error = AnswerTooLarge(f"the answer would be {len(answer.body):,} bytes; at most {self.config.max_response_bytes:,}: "
                               "send fewer instances per request, or ask for a binary answer (Accept: application/x-npy)")
        return _error_answer(error, answer.protocol)

    def _decode_and_validate(self, requests: Sequence[RequestInput], answers: list[Answer | None]) -> list[Accepted]:
        """Per request: decode and check against the signature. Rejects get their answer; the rest are returned."""
        decoded_requests: list[tuple[int, DecodedRequest, bool]] = []
        budget = PixelBudget(self.batch_pixels) if self.batch_pixels is not None else None

        def decoded_or_error(request: RequestInput) -> DecodedRequest | RequestError:
            return self._decoded(request, budget)

        results = self.decode_pool.map(decoded_or_error, requests) if self.decode_pool else map(decoded_or_error, requests)
        for idx, (request, decoded) in enumerate(zip(requests, results)):
            if isinstance(decoded, RequestError):
                answers[idx] = _error_answer(decoded, decoded.protocol)
                continue
            decoded_requests.append((idx, decoded, media_type(request.accept) in BINARY_ANSWER_TYPES))
        tokenized = self._tokenized([decoded for _, decoded, _ in decoded_requests])
        accepted = []
        for (idx, _, binary), (decoded, arrays) in zip(decoded_requests, tokenized):
            if isinstance(arrays, RequestError):  # e.g. a question too long for the model
                answers[idx] = _error_answer(arrays, decoded.protocol)
                continue
            try:
                arrays = self.signature.check_request(arrays, self.config.max_instances)
            except RequestError as error:
                answers[idx] = _error_answer(error, decoded.protocol)
                continue
            except Exception as error:  # a check that raised on an array nobody foresaw: that request's 400
                answers[idx] = _error_answer(_unforeseen(error, requests[idx], "checking its inputs"), decoded.protocol)
                continue
            accepted.append((idx, decoded, arrays, binary))
        return accepted

    def _sub_batches(self, accepted: list[Accepted], times: StageTimes) -> list[list[Accepted]]:
        """The accepted requests as the batches the model runs: one, or for a model with a dynamic dimension,
        sub-batches of similar length (handlers/sub_batches.py), counting real and computed tokens."""
        if not accepted:
            return []
        if not self.signature.dynamic:
            times.sub_batches = 1
            return [accepted]
        items = [Item(_rows(arrays), self._length(arrays)) for _, _, arrays, _ in accepted]
        groups = plan_sub_batches(items, self.sub_batch_policy)
        times.sub_batches = len(groups)
        times.real_tokens = sum(item.rows * item.length for item in items)
        times.computed_tokens = sum(sum(items[i].rows for i in group) * max(items[i].length for i in group)
                                    for group in groups)
        return [[accepted[i] for i in group] for group in groups]

    def _length(self, arrays: Batch) -> int:
        """One request's extent on the dynamic dimensions of its first dynamic input (they share lengths)."""
        spec = next(spec for spec in self.signature.inputs if spec.dynamic)
        shape = arrays[spec.name].shape[1:]
        return int(np.prod([size for size, dim in zip(shape, spec.shape) if isinstance(dim, Range)]))

    def _stacked(self, group: list[Accepted], answers: list[Answer | None]) -> tuple[list[Accepted], Batch | None]:
        """One batch from ``group``, padded to its longest; values checked once per batch (None when none is left)."""
        batch = self.signature.stack([arrays for _, _, arrays, _ in group])
        if not self.signature.values_ok(batch):
            # Rare path: some request holds NaN/Inf or out-of-range values; find and answer them.
            group = [item for item in group if self._values_checked(item, answers)]
            batch = self.signature.stack([arrays for _, _, arrays, _ in group]) if group else None
        return group, batch

    def _decoded(self, request: RequestInput, budget: PixelBudget | None = None) -> DecodedRequest | RequestError:
        """One request's body decoded, or the error it is answered with: whatever a decoder raises stays that
        request's answer (a 400 naming the exception, logged with the request id), never the batch's."""
        try:
            decoded = decode_request(request, self.body_options, budget)
            if decoded.texts is not None:
                check_count(decoded.texts, self.config.max_instances)
            if decoded.pairs is not None:
                check_count(decoded.pairs, self.config.max_instances, "questions")
        except RequestError as error:
            return error
        except MemoryError:
            return TooComplex("the body needs more memory to decode than this worker has")
        except Exception as error:  # a decoder (ours, numpy, Pillow, zipfile) failing on bytes nobody foresaw
            return _unforeseen(error, request, "decoding its body")
        return decoded

    def _tokenized(self, decoded: list[DecodedRequest]
                   ) -> list[tuple[DecodedRequest, dict[str, np.ndarray] | RequestError]]:
        """Each request's arrays; the texts (or question/context pairs) of every such request in the batch tokenised
        in one call. When that call fails, each request is tokenised alone, so only the one the tokenizer refuses
        gets a 400."""
        if all(d.texts is None and d.pairs is None for d in decoded):
            return [(d, d.arrays) for d in decoded]
        try:
            return self._tokenized_together(decoded)
        except Exception:  # noqa: BLE001 - retried per request just below; each failure is answered and logged
            logger.warning("the batch's tokenizer call failed; tokenising its %d requests one by one", len(decoded))
        out: list[tuple[DecodedRequest, dict[str, np.ndarray] | RequestError]] = []
        for d in decoded:
            try:
                out.extend(self._tokenized_together([d]))
            except Exception as err:  # noqa: BLE001 - the tokenizer's own error becomes this request's 400
                logger.warning("the tokenizer refused a request: %s", quoted(str(err), 200))
                out.append((d, MalformedRequest(f"the tokenizer refused this text ({type(err).__name__}: "
                                                f"{quoted(str(err), 200)})")))
        return out

    def _tokenized_together(self, decoded: list[DecodedRequest]
                            ) -> list[tuple[DecodedRequest, dict[str, np.ndarray] | RequestError]]:
        """One tokenizer call for the texts (and one for the question/context pairs) of all ``decoded``. Tasks that
        answer about the text get each request's tokens on its DecodedRequest."""
        texts = [d.texts for d in decoded if d.texts is not None]
        pairs = [d.pairs for d in decoded if d.pairs is not None]
        encoder = self.text_encoder
        if self.per_request:  # a TextRequestEncoder: keeps the tokens, splits long contexts into windows
            encoded_texts = iter(encoder.encode_texts(texts) if texts else ())  # type: ignore[union-attr]
            encoded_pairs = iter(encoder.encode_pairs(pairs, self.config.max_instances) if pairs else ())  # type: ignore[union-attr]
            out = []
            for d in decoded:
                if d.texts is None and d.pairs is None:
                    out.append((d, d.arrays))
                    continue
                result = next(encoded_texts if d.texts is not None else encoded_pairs)
                if isinstance(result, RequestError):
                    out.append((d, result))
                else:
                    out.append((replace(d, tokens=result[1]), result[0]))
            return out
        encoded = iter(encoder.encode(texts))  # type: ignore[union-attr]
        return [(d, next(encoded) if d.texts is not None else d.arrays) for d in decoded]

    def _infer(self, batch: Batch, accepted: list[Accepted], answers: list[Answer | None]) -> tuple[np.ndarray, ...] | None:
        """Run the batch once. A composed model's member failing or timing out answers every accepted request."""
        try:
            outputs = tuple(self.backend.run_named(batch))
        except AnsweredError as error:
            for idx, decoded, _, _ in accepted:
                answers[idx] = _error_answer(error, decoded.protocol)
            return None
        rows = _rows(batch)
        if len(outputs) != len(self.signature.outputs) or any(np.shape(o)[:1] != (rows,) for o in outputs):
            raise RuntimeError(f"model returned outputs of shapes {[list(np.shape(o)) for o in outputs]} for {rows} "
                               f"inputs; the signature declares {list(self.signature.outputs)}, one row per input")
        return outputs

    def _encode(self, accepted: list[Accepted], outputs: tuple[np.ndarray, ...], answers: list[Answer | None]) -> None:
        """Split the batch's outputs back to their requests, each in the protocol and format it asked for."""
        if self.config.output == PROBABILITIES:
            self._encode_probabilities(accepted, outputs[0], answers)
            return
        if self.per_request:
            self._encode_per_request(accepted, outputs, answers)
            return
        wants_json = any(decoded.v2 is None and not binary for _, decoded, _, binary in accepted)
        finite = _finite_rows(outputs)
        with np.errstate(all="ignore"):  # non-finite rows are never answered; their warnings say nothing new
            rows = self.task.json_rows(outputs) if wants_json else []
        start = 0
        for idx, decoded, arrays, binary in accepted:
            stop = start + _rows(arrays)
            if not finite[start:stop].all():
                answers[idx] = _error_answer(self._non_finite(outputs, finite, start, stop), decoded.protocol)
            elif decoded.v2 is not None:
                answers[idx] = self._v2_answer(tuple(o[start:stop] for o in outputs), decoded.v2)
            elif binary:
                body, content_type = self.task.binary(tuple(o[start:stop] for o in outputs))
                answers[idx] = Answer(OK_STATUS, OK_PHRASE, body, content_type)
            else:
                answers[idx] = Answer(OK_STATUS, OK_PHRASE, encode_predictions(rows[start:stop]))
            start = stop

    def _encode_per_request(self, accepted: list[Accepted], outputs: tuple[np.ndarray, ...],
                            answers: list[Answer | None]) -> None:
        """Token and span tasks: each request's rows, cropped to its own length, answered with its own tokens."""
        task = self.task
        finite = _finite_rows(outputs)
        start = 0
        for idx, decoded, arrays, binary in accepted:
            stop = start + _rows(arrays)
            mine = tuple(o[start:stop] for o in outputs)
            if not finite[start:stop].all():
                answers[idx] = _error_answer(self._non_finite(outputs, finite, start, stop), decoded.protocol)
            elif decoded.v2 is not None:
                answers[idx] = self._v2_answer(mine, decoded.v2, task.request_v2(mine, arrays))  # type: ignore[union-attr]
            elif binary:
                body, content_type = task.request_binary(mine, arrays)  # type: ignore[union-attr]
                answers[idx] = Answer(OK_STATUS, OK_PHRASE, body, content_type)
            else:
                rows = task.request_rows(mine, arrays, decoded.tokens)  # type: ignore[union-attr]
                answers[idx] = Answer(OK_STATUS, OK_PHRASE, encode_predictions(rows))
            start = stop

    def _v2_answer(self, outputs: tuple[np.ndarray, ...], options: V2Options,
                   tensors: dict[str, Any] | None = None) -> Answer:
        tensors = self.task.v2_tensors(outputs) if tensors is None else tensors
        body, header_length = encode_v2(tensors, self.model_name, options)
        if header_length is None:
            return Answer(OK_STATUS, OK_PHRASE, body, protocol=V2)
        return Answer(OK_STATUS, OK_PHRASE, body, BINARY_CONTENT_TYPE, ((HEADER_LENGTH, str(header_length)),), V2)

    def _non_finite(self, outputs: tuple[np.ndarray, ...], finite: np.ndarray, start: int, stop: int) -> NonFiniteOutput:
        """The 500 for a request whose outputs hold NaN or Infinity (JSON cannot carry them)."""
        bad = [int(row) for row in np.flatnonzero(~finite[start:stop])]
        names = [name for name, output in zip(self.signature.outputs, outputs)
                 if output.dtype.kind in "fc" and not np.isfinite(output[start:stop]).all()]
        ranged = any(spec.min_value is not None or spec.max_value is not None for spec in self.signature.inputs)
        hint = "" if ranged else ("; declare the inputs' range (servekit export --min/--max) so such inputs are "
                                  "refused with 422 before the model runs")
        return NonFiniteOutput(f"the model's output {', '.join(names)} holds NaN or Infinity for instance(s) "
                               f"{bad[:8]} of this request; never answered as numbers{hint}")

    def _encode_probabilities(self, accepted: list[Accepted], logits: np.ndarray, answers: list[Answer | None]) -> None:
        """Each request's rows of class probabilities as float32 .npy (a workflow member's answer)."""
        finite = _finite_rows((logits,))
        with np.errstate(all="ignore"):
            probabilities = member_probabilities(logits)
        start = 0
        for idx, decoded, arrays, _ in accepted:
            stop = start + _rows(arrays)
            if not finite[start:stop].all():
                answers[idx] = _error_answer(self._non_finite((logits,), finite, start, stop), decoded.protocol)
            else:
                answers[idx] = Answer(OK_STATUS, OK_PHRASE, encode_npy(probabilities[start:stop]), NPY_CONTENT_TYPE)
            start = stop

    def _values_checked(self, item: Accepted, answers: list[Answer | None]) -> bool:
        idx, decoded, arrays, _ = item
        try:
            self.signature.check_values(arrays)
            return True
        except RequestError as error:
            answers[idx] = _error_answer(error, decoded.protocol)
            return False


def _rows(batch: Batch) -> int:
    """Instances in a batch (every input has the same count)."""
    return next(iter(batch.values())).shape[0]


def _finite_rows(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Per instance of the batch: whether every floating output value of it is finite."""
    rows = np.shape(outputs[0])[0]
    finite = np.ones(rows, dtype=bool)
    for output in outputs:
        output = np.asarray(output)
        if output.dtype.kind in "fc":
            finite &= np.isfinite(output.reshape(rows, -1)).all(axis=1)
    return finite


def _unforeseen(error: Exception, request: RequestInput, step: str) -> MalformedRequest:
    """A 400 for an exception nobody foresaw while handling one request; logged with its traceback, because a
    decoder that raises anything but a RequestError is a bug to fix."""
    logger.exception("request %s: %s raised %s; answered 400", request.request_id, step, type(error).__name__)
    return MalformedRequest(f"the body could not be decoded ({type(error).__name__}: {quoted(str(error), 200)})")


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _error_answer(error: AnsweredError, protocol: str) -> Answer:
    """The error in the format of the protocol the request spoke."""
    body = encode_v2_error(error.message) if protocol == V2 else encode_error(error)
    return Answer(error.status, error.phrase, body, protocol=protocol)
