"""Text bodies: ``{"text": "..."}`` / ``{"text": [...]}`` or ``text/plain``; for extractive question
answering ``{"question": "...", "context": "..."}`` (or a list of them under ``"inputs"``). Only models
whose model-config.yaml names a tokenizer take them (``handlers/text_encoder.py`` tokenises a batch at once)."""
from __future__ import annotations

from typing import Any

from handlers.errors import MalformedRequest, TooManyInstances

TEXT_KEY = "text"
TEXT_TYPES = ("text/plain",)
PAIR_KEYS = ("question", "context")
PAIR_EXAMPLE = '{"question": "...", "context": "..."}'


def texts_from_json(document: Any) -> list[str] | None:
    """The texts of ``{"text": "..."}`` or ``{"text": [...]}``; None when the body is not a text request."""
    if not isinstance(document, dict) or set(document) != {TEXT_KEY}:
        return None
    value = document[TEXT_KEY]
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise MalformedRequest(f"'{TEXT_KEY}' must be a string or a non-empty list of strings")
    return texts


def pairs_from_json(document: Any) -> list[tuple[str, str]] | None:
    """The (question, context) pairs of ``{"question": q, "context": c}`` or ``{"inputs": {...} | [{...}, ...]}``;
    None when the body is neither (it may still hold token ids)."""
    if isinstance(document, dict) and set(document) == {"inputs"} and isinstance(document["inputs"], (dict, list)):
        items = document["inputs"] if isinstance(document["inputs"], list) else [document["inputs"]]
        if not items or not all(isinstance(i, dict) and set(i) == set(PAIR_KEYS) for i in items):
            if any(isinstance(i, dict) and set(PAIR_KEYS) & set(i) for i in items):
                raise MalformedRequest(f"every item of 'inputs' must be {PAIR_EXAMPLE}")
            return None
    elif isinstance(document, dict) and set(PAIR_KEYS) & set(document):
        if set(document) != set(PAIR_KEYS):
            raise MalformedRequest(f"a question needs exactly the keys question and context: {PAIR_EXAMPLE}; "
                                   f"got {sorted(document)}")
        items = [document]
    else:
        return None
    pairs = []
    for item in items:
        question, context = item["question"], item["context"]
        if not isinstance(question, str) or not isinstance(context, str) or not question.strip() or not context.strip():
            raise MalformedRequest("question and context must be non-empty strings")
        pairs.append((question, context))
    return pairs


def check_count(texts: list, max_instances: int, noun: str | None = None) -> None:
    """One request's texts (or questions, ``noun``) are instances like any other: at most ``max_instances``."""
    if len(texts) > max_instances:
        what = f"the request holds {len(texts)} {noun}" if noun else f"'{TEXT_KEY}' holds {len(texts)} texts"
        raise TooManyInstances(f"{what}; at most {max_instances} per request")


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
