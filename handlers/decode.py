"""Decode one request body (JSON, raw .npy or Open Inference Protocol) into a numpy array; no contract checks here."""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from handlers.contract import holds_bool
from handlers.errors import InvalidInput, MalformedRequest, RequestError, UnsupportedMediaType
from handlers.open_inference import HEADER_LENGTH, PLAIN, V2, V2Options, decode_v2, is_v2, split_binary

JSON_TYPES = ("application/json", "text/json")
NPY_TYPES = ("application/x-npy", "application/npy", "application/octet-stream")
NPY_MAGIC = b"\x93NUMPY"
JSON_DATA_KEY = "data"
# curl's default for --data. TorchServe's frontend reads such a body as form fields: the worker gets
# none of its bytes (or fragments split at '=' and '&'), so it cannot be recognised, only refused.
FORM_TYPE = "application/x-www-form-urlencoded"
SNIFF_BYTES = 64  # how far into a body sniff_media_type looks past leading whitespace for JSON
SET_CONTENT_TYPE = "set the Content-Type header to application/json, or application/x-npy (curl: --data-binary)"


def media_type(content_type: str | None) -> str:
    """``'application/json; charset=utf-8'`` -> ``'application/json'``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class DecodedRequest:
    """One request's array and, for an Open Inference Protocol request, what else it asked for."""

    array: np.ndarray
    v2: V2Options | None = None

    @property
    def protocol(self) -> str:
        """The protocol the request spoke; its answer uses the same."""
        return PLAIN if self.v2 is None else V2


def decode_request(payload: Any, content_type: str | None, input_name: str,
                   header_length: str | None = None) -> DecodedRequest:
    """Like ``decode_payload``, but also recognises Open Inference Protocol (v2) requests, in JSON or
    with the binary extension (``header_length`` is their ``Inference-Header-Content-Length``)."""
    if header_length is not None:
        return _decoded_v2(payload, input_name, header_length)
    document = payload
    kind = media_type(content_type)
    # Triton's client sends v2 JSON without a content type: sniff it, as decode_payload does.
    if isinstance(payload, (bytes, bytearray, str)) and payload and (
            kind in JSON_TYPES or (kind == "" and sniff_media_type(payload) in JSON_TYPES)):
        document = parse_json(payload)
    if is_v2(document):
        return _decoded_v2(document, input_name)
    return DecodedRequest(decode_payload(document, content_type, input_name))


def _decoded_v2(document: Any, input_name: str, header_length: str | None = None) -> DecodedRequest:
    """A v2 request; its rejections are answered in the protocol's own error format."""
    try:
        binary = None
        if header_length is not None:
            header, binary = split_binary(document, header_length)
            document = parse_json(header)
            if not is_v2(document):
                raise MalformedRequest(f"a body with {HEADER_LENGTH} must be a v2 request with 'inputs'")
        array, options = decode_v2(document, input_name, binary)
    except RequestError as error:
        error.protocol = V2
        raise
    return DecodedRequest(array, options)


def decode_payload(payload: Any, content_type: str | None, input_name: str) -> np.ndarray:
    """Turn one request's body into an array.

    ``payload`` is what the TorchServe worker hands over: bytes, str, or an already parsed
    JSON object (the worker parses ``application/json`` itself unless
    ``TS_DECODE_INPUT_REQUEST=false``).
    """
    kind = media_type(content_type)
    if kind == FORM_TYPE:
        raise UnsupportedMediaType(f"content type {FORM_TYPE} (curl's default for --data) makes TorchServe read "
                                   f"the body as form fields, so none of it reaches the model; {SET_CONTENT_TYPE}")
    if payload is None or (isinstance(payload, (bytes, bytearray, str)) and len(payload) == 0):
        raise MalformedRequest("request body is empty; expected JSON {\"data\": ...} or an .npy array")
    if isinstance(payload, (dict, list)):
        return _array_from_json(payload, input_name)
    if kind == "":
        kind = sniff_media_type(payload) or ""
        if not kind:
            raise UnsupportedMediaType(f"the request has no content type and its body is neither JSON nor .npy; "
                                       f"{SET_CONTENT_TYPE}")
    if kind in NPY_TYPES:
        return decode_npy(bytes(payload) if isinstance(payload, bytearray) else payload)
    if kind in JSON_TYPES:
        return _array_from_json(parse_json(payload), input_name)
    raise UnsupportedMediaType(
        f"content type {kind!r} is not supported; send application/json or application/x-npy"
    )


def sniff_media_type(payload: Any) -> str | None:
    """What a body without a content type is, from its own bytes: .npy (its magic), JSON (an object or
    array) or None. The one place that guesses; a new body format adds its signature here."""
    if isinstance(payload, (dict, list)):  # the worker parsed it already
        return JSON_TYPES[0]
    if isinstance(payload, str):  # the worker hands over str only for text/* types; kept for callers of our own
        return JSON_TYPES[0] if payload[:SNIFF_BYTES].lstrip()[:1] in ("{", "[") else None
    if not isinstance(payload, (bytes, bytearray)):
        return None
    if payload[:len(NPY_MAGIC)] == NPY_MAGIC:
        return NPY_TYPES[0]
    return JSON_TYPES[0] if bytes(payload[:SNIFF_BYTES]).lstrip()[:1] in (b"{", b"[") else None


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


# The header is a Python dict literal; we read its three fields with a regex instead of numpy's
# literal_eval-based parser: about 10x faster on small arrays, and no path into pickle at all.
NPY_HEADER = re.compile(
    r"^\{'descr': '(?P<descr>[<>|=][a-zA-Z]\d*)', 'fortran_order': (?P<fortran>True|False), "
    r"'shape': \((?P<shape>[\d, ]*)\), \}\s*$"
)
NPY_VERSIONS = {1: ("<H", 10), 2: ("<I", 12), 3: ("<I", 12)}  # header-length field and data offset base


def decode_npy(payload: bytes | str) -> np.ndarray:
    """Load an .npy body without ever unpickling it: plain numeric dtypes only."""
    if isinstance(payload, str):
        raise MalformedRequest("an .npy body must be binary, not text")
    if not payload.startswith(NPY_MAGIC) or len(payload) < 10:
        raise MalformedRequest("body is not an .npy array (missing the \\x93NUMPY header)")
    version = payload[6]
    if version not in NPY_VERSIONS:
        raise MalformedRequest(f"npy format version {version} is not supported")
    length_format, base = NPY_VERSIONS[version]
    (header_length,) = struct.unpack_from(length_format, payload, 8)
    header = payload[base:base + header_length].decode("latin1", errors="replace")
    match = NPY_HEADER.match(header)
    if match is None:
        if "'|O'" in header or "'O'" in header:
            raise MalformedRequest("npy arrays of Python objects are refused (they need pickle)")
        raise MalformedRequest(f"npy header is damaged or not a plain numeric array: {header.strip()[:80]!r}")
    try:
        dtype = np.dtype(match["descr"])
    except TypeError:
        raise MalformedRequest(f"npy dtype {match['descr']!r} is not understood") from None
    if dtype.hasobject:
        raise MalformedRequest("npy arrays of Python objects are refused (they need pickle)")
    shape = tuple(int(d) for d in match["shape"].replace(" ", "").split(",") if d)
    count = int(np.prod(shape, dtype=np.int64))
    data = payload[base + header_length:]
    if len(data) != count * dtype.itemsize:
        raise MalformedRequest(
            f"npy body is damaged or truncated: header says {list(shape)} {dtype} "
            f"({count * dtype.itemsize} bytes), body has {len(data)}")
    array = np.frombuffer(data, dtype=dtype, count=count)
    order = "F" if match["fortran"] == "True" else "C"
    return array.reshape(shape, order=order)


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
    if array.dtype.kind != "b" and holds_bool(values):  # numpy reads [1.5, true] as [1.5, 1.0]
        raise InvalidInput(f"input '{input_name}' holds booleans (JSON true/false); expected numbers")
    return array
