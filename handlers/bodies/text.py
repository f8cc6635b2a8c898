"""Text bodies: ``{"text": "..."}`` / ``{"text": [...]}`` or ``text/plain``. Only models whose
model-config.yaml names a tokenizer take them (``handlers/text_encoder.py`` tokenises a batch at once)."""
from __future__ import annotations

from typing import Any

from handlers.errors import MalformedRequest, TooManyInstances, quoted

TEXT_KEY = "text"
TEXT_TYPES = ("text/plain",)


def texts_from_json(document: Any, max_chars: int | None = None, max_instances: int | None = None) -> list[str] | None:
    """The texts of ``{"text": "..."}`` or ``{"text": [...]}``, each cut to ``max_chars`` (counted against
    ``max_instances`` first); None when the body is not a text request."""
    if not isinstance(document, dict) or set(document) != {TEXT_KEY}:
        return None
    value = document[TEXT_KEY]
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise MalformedRequest(f"'{TEXT_KEY}' must be a string or a non-empty list of strings")
    if max_instances is not None:
        check_count(texts, max_instances)
    return [checked_text(text, max_chars, f"'{TEXT_KEY}'" if len(texts) == 1 else f"'{TEXT_KEY}'[{idx}]")
            for idx, text in enumerate(texts)]


def checked_text(text: str, max_chars: int | None, what: str) -> str:
    """A text cut to ``max_chars`` (the tokenizer would drop the rest anyway), refused when empty or when it is
    not Unicode the tokenizer can take (a lone surrogate such as "\\ud800", which JSON can carry)."""
    if max_chars is not None:
        text = text[:max_chars]
    if not text.strip():
        raise MalformedRequest(f"{what} is empty; send at least one word")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise MalformedRequest(f"{what} holds {quoted(err.object[err.start:err.end])} at character {err.start}, "
                               "which is not text (a lone UTF-16 surrogate)") from None
    return text


def check_count(texts: list[str], max_instances: int) -> None:
    """One request's texts are instances like any other: at most ``max_instances``."""
    if len(texts) > max_instances:
        raise TooManyInstances(f"'{TEXT_KEY}' holds {len(texts)} texts; at most {max_instances} per request")


def text_from_plain(payload: Any, max_chars: int | None = None) -> list[str]:
    """A ``text/plain`` body as one text (UTF-8), cut to ``max_chars``."""
    if isinstance(payload, (bytes, bytearray)):
        cut = max_chars is not None and len(payload) > 4 * max_chars
        if cut:  # a UTF-8 character is at most 4 bytes: decode no more than can be kept
            payload = payload[:4 * max_chars]
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            if not (cut and err.end == len(payload)):
                raise MalformedRequest(f"text body is not valid UTF-8 (byte {err.start})") from None
            payload = payload[:err.start].decode("utf-8")  # the cut split a character: drop its first bytes
    if not isinstance(payload, str) or not payload:
        raise MalformedRequest("text body is empty")
    return [checked_text(payload, max_chars, "the text body")]
