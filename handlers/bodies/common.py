"""What every body decoder shares: a Content-Type's media type, JSON parsing with errors that say where
it broke, and magic-byte checks."""
from __future__ import annotations

import json
from typing import Any

from handlers.errors import MalformedRequest

JSON_TYPES = ("application/json", "text/json")


def media_type(content_type: str | None) -> str:
    """``'application/json; charset=utf-8'`` -> ``'application/json'``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def starts_like(payload: bytes | bytearray | str, magic: bytes) -> bool:
    """Whether a binary body begins with a format's magic bytes."""
    return isinstance(payload, (bytes, bytearray)) and payload[:len(magic)] == magic


def parse_json(payload: bytes | bytearray | str) -> Any:
    """Parse JSON text with errors that say where it broke."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
    except UnicodeDecodeError as err:
        raise MalformedRequest(f"body is not valid UTF-8 (byte {err.start}); JSON must be UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise MalformedRequest(f"body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except RecursionError:
        raise MalformedRequest("JSON is nested too deeply") from None
