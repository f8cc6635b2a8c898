"""Decode one request body into named arrays: JSON and raw .npy here, .npz in ``npz.py``, the Open
Inference Protocol in ``open_inference.py``, text in ``text.py``. No signature checks here
(``signature.py`` does them)."""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from handlers.contract import holds_bool
from handlers.errors import InvalidInput, MalformedRequest, RequestError, UnsupportedMediaType
from handlers.open_inference import HEADER_LENGTH, OUTPUTS, PLAIN, V2, V2Options, decode_v2, is_v2, split_binary
from handlers.text import TEXT_TYPES, text_from_plain, texts_from_json

if TYPE_CHECKING:
    from handlers.image import ImagePreprocess

JSON_TYPES = ("application/json", "text/json")
NPY_TYPES = ("application/x-npy", "application/npy", "application/octet-stream")
NPZ_TYPES = ("application/x-npz", "application/npz")
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip of .npy files
JSON_DATA_KEY = "data"
# curl's default for --data. TorchServe's frontend reads such a body as form fields: the worker gets
# none of its bytes (or fragments split at '=' and '&'), so it cannot be recognised, only refused.
FORM_TYPE = "application/x-www-form-urlencoded"
SNIFF_BYTES = 64  # how far into a body sniff_media_type looks past leading whitespace for JSON
SET_CONTENT_TYPE = ("set the Content-Type header to application/json, application/x-npy or application/x-npz "
                    "(curl: --data-binary)")
JSON_INPUTS_KEY = "inputs"  # {"inputs": {"input_ids": [...], "attention_mask": [...]}}


def media_type(content_type: str | None) -> str:
    """``'application/json; charset=utf-8'`` -> ``'application/json'``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class DecodedRequest:
    """One request's arrays by input name and, for an Open Inference Protocol request, what else it asked for."""

    arrays: dict[str, np.ndarray]
    v2: V2Options | None = None
    texts: list[str] | None = None  # a text request: the pipeline tokenises the batch's texts at once

    @property
    def protocol(self) -> str:
        """The protocol the request spoke; its answer uses the same."""
        return PLAIN if self.v2 is None else V2

    @property
    def array(self) -> np.ndarray:
        """The only array of a one-input request."""
        if len(self.arrays) != 1:
            raise MalformedRequest(f"expected one input; the request holds {sorted(self.arrays)}")
        return next(iter(self.arrays.values()))


def decode_request(payload: Any, content_type: str | None, input_names: str | Sequence[str],
                   header_length: str | None = None, answer_names: Sequence[str] = OUTPUTS,
                   accepts_text: bool = False, images: Mapping[str, ImagePreprocess] | None = None,
                   fields: Sequence[tuple[str, Any, str | None]] = (), max_images: int | None = None) -> DecodedRequest:
    """Like ``decode_payload``, but also recognises Open Inference Protocol (v2) requests, in JSON or
    with the binary extension (``header_length`` is their ``Inference-Header-Content-Length``), and,
    for a model with a tokenizer (``accepts_text``), ``{"text": ...}`` and ``text/plain`` bodies.

    ``answer_names``: the v2 outputs this model answers, so a request asking for others fails here.
    ``images``: the model's image inputs; their requests carry encoded images (``image_bodies.py``),
    also as multipart form ``fields`` (name, value, content type).
    """
    if images:
        from handlers.image_bodies import decode_image_request

        return decode_image_request(payload, content_type, images, header_length, answer_names, fields, max_images)
    names = (input_names,) if isinstance(input_names, str) else tuple(input_names)
    if header_length is not None:
        return _decoded_v2(payload, names, answer_names, header_length)
    document = payload
    kind = media_type(content_type)
    if accepts_text and kind in TEXT_TYPES:
        return DecodedRequest({}, texts=text_from_plain(payload))
    # Triton's client sends v2 JSON without a content type: sniff it, as decode_payload does.
    if isinstance(payload, (bytes, bytearray, str)) and payload and (
            kind in JSON_TYPES or (kind == "" and sniff_media_type(payload) in JSON_TYPES)):
        document = parse_json(payload)
    if is_v2(document):
        return _decoded_v2(document, names, answer_names)
    texts = texts_from_json(document) if accepts_text else None
    if texts is not None:
        return DecodedRequest({}, texts=texts)
    return DecodedRequest(decode_arrays(document, content_type, names))


def _decoded_v2(document: Any, names: tuple[str, ...], answer_names: Sequence[str],
                header_length: str | None = None) -> DecodedRequest:
    """A v2 request; its rejections are answered in the protocol's own error format."""
    try:
        document, binary = v2_document(document, header_length)
        arrays, options = decode_v2(document, names, binary, answer_names)
    except RequestError as error:
        error.protocol = V2
        raise
    return DecodedRequest(arrays, options)


def v2_document(payload: Any, header_length: str | None) -> tuple[Any, memoryview | None]:
    """A v2 request's JSON document and, with the binary extension, the tensor bytes after it."""
    if header_length is None:
        return payload, None
    header, binary = split_binary(payload, header_length)
    document = parse_json(header)
    if not is_v2(document):
        raise MalformedRequest(f"a body with {HEADER_LENGTH} must be a v2 request with 'inputs'")
    return document, binary


def decode_payload(payload: Any, content_type: str | None, input_name: str) -> np.ndarray:
    """One-input models: turn one request's body into its array (see ``decode_arrays``)."""
    return decode_arrays(payload, content_type, (input_name,))[input_name]


def decode_arrays(payload: Any, content_type: str | None, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Turn one request's body into arrays by input name.

    ``payload`` is what the TorchServe worker hands over: bytes, str, or an already parsed
    JSON object (the worker parses ``application/json`` itself unless
    ``TS_DECODE_INPUT_REQUEST=false``). A raw .npy body feeds a one-input model; an .npz holds one
    array per input.
    """
    kind = media_type(content_type)
    if kind == FORM_TYPE:
        raise UnsupportedMediaType(f"content type {FORM_TYPE} (curl's default for --data) makes TorchServe read "
                                   f"the body as form fields, so none of it reaches the model; {SET_CONTENT_TYPE}")
    if payload is None or (isinstance(payload, (bytes, bytearray, str)) and len(payload) == 0):
        raise MalformedRequest("request body is empty; expected JSON {\"data\": ...} or an .npy array")
    if isinstance(payload, (dict, list)):
        return _arrays_from_json(payload, names)
    if kind == "":
        kind = sniff_media_type(payload) or ""
        if not kind:
            raise UnsupportedMediaType(f"the request has no content type and its body is neither JSON, .npy nor "
                                       f".npz; {SET_CONTENT_TYPE}")
    if kind in NPZ_TYPES or (kind in NPY_TYPES and _starts_like(payload, ZIP_MAGIC)):
        from handlers.npz import decode_npz

        return decode_npz(bytes(payload) if isinstance(payload, bytearray) else payload)
    if kind in NPY_TYPES:
        if len(names) != 1:
            raise MalformedRequest(f"this model takes {len(names)} inputs ({', '.join(names)}); "
                                   "send them as .npz (application/x-npz) or JSON {\"inputs\": {...}}")
        return {names[0]: decode_npy(bytes(payload) if isinstance(payload, bytearray) else payload)}
    if kind in JSON_TYPES:
        return _arrays_from_json(parse_json(payload), names)
    raise UnsupportedMediaType(
        f"content type {kind!r} is not supported; send application/json, application/x-npy or application/x-npz"
    )


def sniff_media_type(payload: Any) -> str | None:
    """What a body without a content type is, from its own bytes: .npy or .npz (their magic), JSON (an
    object or array) or None. The one place that guesses; a new body format adds its signature here."""
    if isinstance(payload, (dict, list)):  # the worker parsed it already
        return JSON_TYPES[0]
    if isinstance(payload, str):  # the worker hands over str only for text/* types; kept for callers of our own
        return JSON_TYPES[0] if payload[:SNIFF_BYTES].lstrip()[:1] in ("{", "[") else None
    if not isinstance(payload, (bytes, bytearray)):
        return None
    if _starts_like(payload, NPY_MAGIC):
        return NPY_TYPES[0]
    if _starts_like(payload, ZIP_MAGIC):
        return NPZ_TYPES[0]
    return JSON_TYPES[0] if bytes(payload[:SNIFF_BYTES]).lstrip()[:1] in (b"{", b"[") else None


def _starts_like(payload: bytes | bytearray | str, magic: bytes) -> bool:
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


def _arrays_from_json(document: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"data": x}`` (or ``{"<input name>": x}``) for one input; ``{"inputs": {name: x, ...}}`` for any."""
    if not isinstance(document, dict):
        raise MalformedRequest(f"JSON body must be an object like {{\"{JSON_DATA_KEY}\": [...]}}; got {type(document).__name__}")
    if set(document) == {JSON_INPUTS_KEY} and isinstance(document[JSON_INPUTS_KEY], dict):
        named = document[JSON_INPUTS_KEY]
        unknown = sorted(set(named) - set(names))
        if unknown:
            raise MalformedRequest(f"JSON 'inputs' has {unknown}; this model takes {list(names)}")
        return {name: _json_array(values, name, name) for name, values in named.items()}
    if len(names) != 1:
        raise MalformedRequest(f"this model takes inputs {list(names)}: send JSON "
                               f"{{\"{JSON_INPUTS_KEY}\": {{\"{names[0]}\": [...], ...}}}}")
    keys = set(document)
    accepted = {JSON_DATA_KEY, names[0]}
    if len(keys) != 1 or not keys <= accepted:
        raise MalformedRequest(
            f"JSON body must have exactly one key, '{JSON_DATA_KEY}' (or '{names[0]}'); got {sorted(keys)}"
        )
    return {names[0]: _json_array(document[keys.pop()], JSON_DATA_KEY, names[0])}


def _json_array(values: Any, key: str, input_name: str) -> np.ndarray:
    if not isinstance(values, list):
        raise MalformedRequest(f"'{key}' must be a (nested) list of numbers; got {type(values).__name__}")
    try:
        array = np.asarray(values)
    except ValueError as err:
        raise MalformedRequest(f"'{key}' is not a rectangular array of numbers: {err}") from None
    if array.dtype == object:
        raise MalformedRequest(f"'{key}' is ragged or holds non-numbers (null, objects); expected a rectangular array of numbers")
    if array.dtype.kind != "b" and holds_bool(values):  # numpy reads [1.5, true] as [1.5, 1.0]
        raise InvalidInput(f"input '{input_name}' holds booleans (JSON true/false); expected numbers")
    return array
