"""Text bodies: ``{"text": "..."}`` / ``{"text": [...]}`` or ``text/plain``; for extractive question
answering ``{"question": "...", "context": "..."}`` (or a list of them under ``"inputs"``). Only models
whose model-config.yaml names a tokenizer take them (``handlers/text_encoder.py`` tokenises a batch at once)."""
from __future__ import annotations

from typing import Any

from handlers.errors import InvalidInput, MalformedRequest, TooManyInstances, quoted

TEXT_KEY = "text"
TEXT_TYPES = ("text/plain",)
PAIR_KEYS = ("question", "context")
PAIR_EXAMPLE = '{"question": "...", "context": "..."}'


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


def pairs_from_json(document: Any, max_chars: int | None = None, max_instances: int | None = None
                    ) -> list[tuple[str, str]] | None:
    """The (question, context) pairs of ``{"question": q, "context": c}`` or ``{"inputs": {...} | [{...}, ...]}``;
    None when the body is neither (it may still hold token ids). With ``max_chars`` (a text's most characters
    the model reads), a longer question, or a context longer than ``max_instances`` windows could hold, is
    refused before anything is tokenised."""
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
    if max_instances is not None:
        check_count(items, max_instances, "questions")
    longest_context = None if max_chars is None else max_chars * (max_instances or 1)
    pairs = []
    for idx, item in enumerate(items):
        question, context = item["question"], item["context"]
        if not isinstance(question, str) or not isinstance(context, str):
            raise MalformedRequest("question and context must be non-empty strings")
        where = "" if len(items) == 1 else f" {idx}"
        if max_chars is not None and len(question) > max_chars:
            raise InvalidInput(f"question{where} holds {len(question)} characters; the model reads at most {max_chars}")
        if longest_context is not None and len(context) > longest_context:
            raise TooManyInstances(f"context{where} holds {len(context)} characters; at most {longest_context} "
                                   "(the windows one request may take)")
        pairs.append((checked_text(question, None, f"question{where}"), checked_text(context, None, f"context{where}")))
    return pairs


def check_count(texts: list, max_instances: int, noun: str | None = None) -> None:
    """One request's texts (or questions, ``noun``) are instances like any other: at most ``max_instances``."""
    if len(texts) > max_instances:
        what = f"the request holds {len(texts)} {noun}" if noun else f"'{TEXT_KEY}' holds {len(texts)} texts"
        raise TooManyInstances(f"{what}; at most {max_instances} per request")


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
