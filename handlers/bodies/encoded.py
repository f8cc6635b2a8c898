"""Encoded files in a body (images, WAV clips): the raw body, a form field, base64 text, and a v2 BYTES
tensor of them. What each kind of file is called in an error comes in a ``Media``; the checks are shared."""
from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

from handlers.bodies.open_inference import HEADER_LENGTH, REQUEST_KEYS, TENSOR_KEYS, _parameters
from handlers.errors import MalformedRequest, quoted

DATA_URL_MARK = ";base64,"  # data:image/jpeg;base64,...
BYTES_LENGTH = struct.Struct("<I")  # v2 binary BYTES: each element's length, then its bytes


@dataclass(frozen=True)
class Media:
    """How errors name one kind of encoded file."""

    body: str  # "an image body"
    file: str  # "an image file"
    its_bytes: str  # "the image's bytes"
    plural: str  # "images"
    encoded: str  # "encoded images"
    input: str  # "this model's input"


IMAGE = Media("an image body", "an image file", "the image's bytes", "images", "encoded images", "this model's input")
WAV = Media("an audio body", "a WAV file", "the WAV file's bytes", "clips", "WAV files", "this model's audio input")


def body_bytes(payload: Any, media: Media) -> bytes | bytearray:
    """A raw body holding one file."""
    if payload is None or len(payload) == 0:
        raise MalformedRequest(f"request body is empty; expected {media.its_bytes}")
    if isinstance(payload, str):  # the worker turns only text/* bodies into str; never an encoded file
        raise MalformedRequest(f"{media.body} must be binary, not text")
    return payload


def field_bytes(field: tuple[str, Any, str | None], media: Media) -> bytes | bytearray:
    """A form field's bytes; a text field may hold the file in base64."""
    name, value, _ = field
    if isinstance(value, str):
        return b64_bytes(value, f"form field {quoted(name)}")
    if not value:
        raise MalformedRequest(f"form field {quoted(name)} is empty; expected {media.file}")
    return value


def b64_bytes(text: str, what: str) -> bytes:
    """Base64 text (or a ``data:...;base64,`` URL) -> bytes; ``what`` names where it came from."""
    if text.startswith("data:") and DATA_URL_MARK in text[:64]:
        text = text.split(DATA_URL_MARK, 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise MalformedRequest(f"{what} is not valid base64: {err}") from None


def v2_encoded_files(document: dict, name: str, binary: memoryview | None, media: Media) -> list[Any]:
    """The files of a v2 BYTES tensor ``[N]`` named ``name``: base64 strings in JSON, length-prefixed in the
    binary extension."""
    unknown = set(document) - REQUEST_KEYS
    if unknown:
        raise MalformedRequest(f"v2 request has unknown keys {quoted(sorted(unknown))}; allowed: {sorted(REQUEST_KEYS)}")
    inputs = document["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise MalformedRequest(f"v2 'inputs' must be a list of exactly one tensor object ('{name}', BYTES)")
    tensor = inputs[0]
    missing = {"name", "shape", "datatype"} - set(tensor)
    if missing or set(tensor) - TENSOR_KEYS:
        raise MalformedRequest(f"v2 input needs name, shape and datatype (and data or binary_data_size); "
                               f"got {quoted(sorted(tensor))}")
    if tensor["name"] != name:
        raise MalformedRequest(f"v2 input is named {quoted(tensor['name'])}; {media.input} is {name!r}")
    if tensor["datatype"] != "BYTES":
        raise MalformedRequest(f"v2 datatype {quoted(tensor['datatype'])}: this model takes {media.encoded} as a "
                               "BYTES tensor [N] (base64 strings in JSON, raw bytes in the binary extension)")
    shape = tensor["shape"]
    if not isinstance(shape, list) or len(shape) not in (1, 2) or shape[1:] not in ([], [1]) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise MalformedRequest(f"v2 shape of a BYTES tensor of {media.plural} must be [N] (or [N, 1]); "
                               f"got {quoted(shape)}")
    size = _parameters(tensor).get("binary_data_size")
    if size is None:
        data = tensor.get("data")
        if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
            raise MalformedRequest(f"v2 BYTES data must be a list of base64 strings (one of the {media.encoded} each)")
        files: list[Any] = [b64_bytes(v, f"v2 element {i}") for i, v in enumerate(data)]
    else:
        if binary is None:
            raise MalformedRequest(f"v2 input declares binary_data_size but the request has no {HEADER_LENGTH} header")
        if not isinstance(size, int) or size != len(binary):
            raise MalformedRequest(f"v2 binary_data_size is {quoted(size)}; the binary section holds {len(binary)} bytes")
        files = split_bytes_elements(binary)
    if len(files) != shape[0]:
        raise MalformedRequest(f"v2 shape {shape} says {shape[0]} {media.plural}; the tensor holds {len(files)}")
    return files


def split_bytes_elements(binary: memoryview) -> list[memoryview]:
    """v2 binary BYTES: a 4-byte little-endian length before each element."""
    elements, offset = [], 0
    while offset < len(binary):
        if offset + BYTES_LENGTH.size > len(binary):
            raise MalformedRequest("v2 BYTES tensor is truncated (a length prefix is cut off)")
        (length,) = BYTES_LENGTH.unpack_from(binary, offset)
        offset += BYTES_LENGTH.size
        if offset + length > len(binary):
            raise MalformedRequest(f"v2 BYTES element {len(elements)} declares {length} bytes; "
                                   f"{len(binary) - offset} remain")
        elements.append(binary[offset:offset + length])
        offset += length
    return elements
