"""Errors answered to clients, each mapped to one HTTP status in one place."""
from __future__ import annotations

from typing import Any

# Client text echoed in a message is cut to this many characters: an answer never grows with what the
# client sent (JSON escaping turns one "é" into 6 bytes, and an answer over max_response_size kills the worker).
ECHO_CHARS = 64
# And a whole message, whatever a raise site forgot to cut: an error answer stays small by construction.
MAX_MESSAGE_CHARS = 1024


def quoted(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr`` of client-supplied text (or any value), cut to ``limit`` characters with the length said."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{text[:limit]!r}... ({len(text):,} characters)"


class ConfigError(ValueError):
    """model-config.yaml (or an export option) is missing a setting or holds a wrong one: a load or build
    error, never a request's answer."""


class AnsweredError(Exception):
    """An error that becomes one request's answer: status, phrase and a JSON body naming the cause."""

    status = 500
    phrase = "Internal Server Error"
    # The protocol of the request that failed ("plain" or "v2"): its answer uses the same format.
    protocol = "plain"

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[:MAX_MESSAGE_CHARS]}... (message cut from {len(message):,} characters)"
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict:
        """Body sent back to the client."""
        return {"code": self.status, "type": type(self).__name__, "message": self.message}


class RequestError(AnsweredError):
    """A problem with one request: answered with a 4xx for that request only."""

    status = 400
    phrase = "Bad Request"


class MalformedRequest(RequestError):
    """The body could not be decoded (bad JSON, truncated npy, empty body...)."""

    status = 400
    phrase = "Bad Request"


class UnsupportedMediaType(RequestError):
    """The content type is not one we decode."""

    status = 415
    phrase = "Unsupported Media Type"


class TooManyInstances(RequestError):
    """One request carries more instances than the model's contract allows."""

    status = 413
    phrase = "Payload Too Large"


class TooManyPixels(RequestError):
    """An image holds more pixels than the model accepts (a decompression bomb); refused before decoding."""

    status = 413
    phrase = "Payload Too Large"


class TooLong(RequestError):
    """An audio clip lasts longer than the model accepts; refused before its samples are decoded."""

    status = 413
    phrase = "Payload Too Large"


class TooComplex(RequestError):
    """A body that would cost more to decode than its size suggests (metadata chunks by the thousand, an
    archive member that inflates past its cap); refused before the expensive step."""

    status = 413
    phrase = "Payload Too Large"


class AnswerTooLarge(RequestError):
    """The request's answer would exceed the response size limit (which would make the frontend drop the worker)."""

    status = 413
    phrase = "Payload Too Large"


class BatchBudgetSpent(RequestError):
    """The batch this request landed in has spent its decode budget (image pixels); retrying soon succeeds."""

    status = 429
    phrase = "Too Many Requests"


class InvalidInput(RequestError):
    """Decoded fine, but breaks the model's input contract (shape, dtype, range, NaN)."""

    status = 422
    phrase = "Unprocessable Entity"


class NonFiniteOutput(AnsweredError):
    """The model answered NaN or Infinity for this request: never written as JSON (it is not JSON), and not
    the client's fault by contract, so a 500 for that request alone."""

    status = 500
    phrase = "Internal Server Error"


class MemberFailed(AnsweredError):
    """A member model of a composed model raised or returned the wrong shape: not the client's fault."""

    status = 500
    phrase = "Internal Server Error"


class MemberTimedOut(AnsweredError):
    """A member model did not answer within its deadline; the request is answered instead of hanging."""

    status = 504
    phrase = "Gateway Timeout"
