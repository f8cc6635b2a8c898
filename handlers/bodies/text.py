"""Text bodies: ``{"text": "..."}`` / ``{"text": [...]}`` or ``text/plain``. Only models whose
model-config.yaml names a tokenizer take them (``handlers/text_encoder.py`` tokenises a batch at once)."""
from __future__ import annotations

from typing import Any

from handlers.errors import MalformedRequest, TooManyInstances

TEXT_KEY = "text"
TEXT_TYPES = ("text/plain",)


def texts_from_json(document: Any) -> list[str] | None:
    """The texts of ``{"text": "..."}`` or ``{"text": [...]}``; None when the body is not a text request."""
    if not isinstance(document, dict) or set(document) != {TEXT_KEY}:
        return None
    value = document[TEXT_KEY]
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise MalformedRequest(f"'{TEXT_KEY}' must be a string or a non-empty list of strings")
    return texts


def check_count(texts: list[str], max_instances: int) -> None:
    """One request's texts are instances like any other: at most ``max_instances``."""
    if len(texts) > max_instances:
        raise TooManyInstances(f"'{TEXT_KEY}' holds {len(texts)} texts; at most {max_instances} per request")


def text_from_plain(payload: Any) -> list[str]:
    """A ``text/plain`` body as one text (UTF-8)."""
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            raise MalformedRequest(f"text body is not valid UTF-8 (byte {err.start})") from None
    if not isinstance(payload, str) or not payload:
        raise MalformedRequest("text body is empty")
    return [payload]
