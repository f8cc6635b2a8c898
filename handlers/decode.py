"""Decode one request body (JSON or raw .npy) into a numpy array; no contract checks here."""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from handlers.errors import MalformedRequest, UnsupportedMediaType

JSON_TYPES = ("application/json", "text/json")
NPY_TYPES = ("application/x-npy", "application/npy", "application/octet-stream")
NPY_MAGIC = b"\x93NUMPY"
JSON_DATA_KEY = "data"


def media_type(content_type: str | None) -> str:
    """``'application/json; charset=utf-8'`` -> ``'application/json'``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_payload(payload: Any, content_type: str | None, input_name: str) -> np.ndarray:
    """Turn one request's body into an array.

    ``payload`` is what the TorchServe worker hands over: bytes, str, or an already parsed
    JSON object (the worker parses ``application/json`` itself unless
    ``TS_DECODE_INPUT_REQUEST=false``).
    """
    kind = media_type(content_type)
    if payload is None or (isinstance(payload, (bytes, bytearray, str)) and len(payload) == 0):
        raise MalformedRequest("request body is empty; expected JSON {\"data\": ...} or an .npy array")
    if isinstance(payload, (dict, list)):
        return _array_from_json(payload, input_name)
    if kind in NPY_TYPES or (kind == "" and bytes(payload[:6]) == NPY_MAGIC):
        return decode_npy(bytes(payload) if isinstance(payload, bytearray) else payload)
    if kind in JSON_TYPES or kind == "":
        return _array_from_json(parse_json(payload), input_name)
    raise UnsupportedMediaType(
        f"content type {kind!r} is not supported; send application/json or application/x-npy"
    )


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


def decode_npy(payload: bytes | str) -> np.ndarray:
    """Load an .npy body without ever unpickling it."""
    if isinstance(payload, str):
        raise MalformedRequest("an .npy body must be binary, not text")
    if not payload.startswith(NPY_MAGIC):
        raise MalformedRequest("body is not an .npy array (missing the \\x93NUMPY header)")
    try:
        return np.load(io.BytesIO(payload), allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise MalformedRequest("npy arrays of Python objects are refused (they need pickle)") from None
        raise MalformedRequest(f"npy body is damaged or truncated: {err}") from None
    except (EOFError, OSError) as err:
        raise MalformedRequest(f"npy body is damaged or truncated: {err}") from None


def _array_from_json(document: Any, input_name: str) -> np.ndarray:
    if not isinstance(document, dict):
        raise MalformedRequest(f"JSON body must be an object like {{\"{JSON_DATA_KEY}\": [...]}}; got {type(document).__name__}")
    keys = set(document)
    accepted = {JSON_DATA_KEY, input_name}
    if len(keys) != 1 or not keys <= accepted:
        raise MalformedRequest(
            f"JSON body must have exactly one key, '{JSON_DATA_KEY}' (or '{input_name}'); got {sorted(keys)}"
        )
    values = document[keys.pop()]
    if not isinstance(values, list):
        raise MalformedRequest(f"'{JSON_DATA_KEY}' must be a (nested) list of numbers; got {type(values).__name__}")
    try:
        array = np.asarray(values)
    except ValueError as err:
        raise MalformedRequest(f"'{JSON_DATA_KEY}' is not a rectangular array of numbers: {err}") from None
    if array.dtype == object:
        raise MalformedRequest(f"'{JSON_DATA_KEY}' is ragged or holds non-numbers (null, objects); expected a rectangular array of numbers")
    return array
