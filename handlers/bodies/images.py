"""Request bodies of a model whose input is an image: raw image bytes, base64 in JSON, v2 BYTES tensors
(JSON or binary) and multipart form uploads, each decoded by the input's ``ImagePreprocess``.

Every way ends in the same ``decode_many``, so a photo answers the same whichever way it came.
"""
from __future__ import annotations

import base64
import binascii
import struct
from typing import Any, Sequence

import numpy as np

from handlers.bodies.arrays import JSON_DATA_KEY, JSON_INPUTS_KEY
from handlers.bodies.common import JSON_TYPES, media_type, parse_json
from handlers.bodies.request import BodyOptions, DecodedRequest, RequestInput
from handlers.errors import MalformedRequest, RequestError, TooManyInstances, UnsupportedMediaType, quoted
from handlers.image import IMAGE_CONTENT_TYPES, ImagePreprocess, PixelBudget, sniff_format
from handlers.bodies.open_inference import (HEADER_LENGTH, REQUEST_KEYS, TENSOR_KEYS, V2, V2Options, _parameters,
                                            _requested_outputs, is_v2, request_id, v2_document)

RAW_TYPES = ("", "application/octet-stream")  # raw bytes whose format we sniff
ACCEPTED_TYPES = "image/jpeg, image/png or image/webp"
DATA_URL_MARK = ";base64,"  # data:image/jpeg;base64,...
BYTES_LENGTH = struct.Struct("<I")  # v2 binary BYTES: each element's length, then its bytes


def decode_image_request(request: RequestInput, options: BodyOptions, budget: PixelBudget | None = None) -> DecodedRequest:
    """One request to an image model -> its decoded pixels ``{input: uint8 [n, h, w, c]}`` (and v2 options).

    More images in one request than ``options.max_instances`` are refused (413) before any is decoded, and
    so are images that decode to more pixels than the request may; ``budget``: what the batch has left (429).
    """
    (name, given), = options.images.items()  # an image input is its model's only input (Signature checks it)
    preprocess = _Limited(given, options.max_instances, budget)
    payload, content_type, fields = request.payload, request.content_type, request.fields
    header_length, answer_names = request.header_length, options.answer_names
    if fields:
        # Multipart: TorchServe hands each form field over as a key of the row; every field is one image.
        return DecodedRequest({name: preprocess.decode_many([_field_bytes(f) for f in fields], "image")})
    if header_length is not None:
        return _v2_request(payload, name, preprocess, answer_names, header_length)
    kind = media_type(content_type)
    if kind.startswith("image/"):
        if kind not in IMAGE_CONTENT_TYPES:
            raise UnsupportedMediaType(f"content type {quoted(kind)} is not supported; this model accepts {ACCEPTED_TYPES} "
                                       "bodies, or JSON with base64 images")
        return DecodedRequest({name: preprocess.decode_many([_body_bytes(payload)])})
    if isinstance(payload, (bytes, bytearray)) and kind in RAW_TYPES and sniff_format(payload) is not None:
        return DecodedRequest({name: preprocess.decode_many([payload])})
    if isinstance(payload, (dict, list)):
        document = payload
    elif kind in JSON_TYPES or kind == "":
        if payload is None or len(payload) == 0:
            raise MalformedRequest(f"request body is empty; send an image ({ACCEPTED_TYPES}) or JSON "
                                   "{\"data\": \"<base64>\"}")
        document = parse_json(payload)
    else:
        raise UnsupportedMediaType(f"content type {quoted(kind)} is not supported; this model takes images: send "
                                   f"{ACCEPTED_TYPES}, JSON {{\"data\": \"<base64>\"}} or multipart form files")
    if is_v2(document):
        return _v2_request(document, name, preprocess, answer_names)
    return DecodedRequest({name: preprocess.decode_many(_json_images(document, name))})


class _Limited:
    """An ImagePreprocess whose ``decode_many`` first counts the images against the request limit."""

    def __init__(self, preprocess: ImagePreprocess, max_images: int | None, budget: PixelBudget | None) -> None:
        self.preprocess, self.max_images, self.budget = preprocess, max_images, budget

    def decode_many(self, images: Sequence[Any], what: str = "image") -> np.ndarray:
        """``ImagePreprocess.decode_many``, after the count check."""
        if self.max_images is not None and len(images) > self.max_images:
            raise TooManyInstances(f"the request holds {len(images)} images; at most {self.max_images} per request "
                                   "(refused before decoding)")
        return self.preprocess.decode_many(images, what, self.budget)


def _body_bytes(payload: Any) -> bytes | bytearray:
    if payload is None or len(payload) == 0:
        raise MalformedRequest("request body is empty; expected the image's bytes")
    if isinstance(payload, str):  # the worker turns only text/* bodies into str; never an image
        raise MalformedRequest("an image body must be binary, not text")
    return payload


def _field_bytes(field: tuple[str, Any, str | None]) -> bytes | bytearray:
    """A form field's bytes; a text field may hold a base64 image."""
    name, value, _ = field
    if isinstance(value, str):
        return _b64(value, f"form field {quoted(name)}")
    if not value:
        raise MalformedRequest(f"form field {quoted(name)} is empty; expected an image file")
    return value


def _json_images(document: Any, name: str) -> list[bytes]:
    """``{"data": "<b64>"}``, ``{"data": ["<b64>", ...]}`` (or the input's name, or ``{"inputs": {name: ...}}``)."""
    if isinstance(document, dict) and set(document) == {JSON_INPUTS_KEY} and isinstance(document[JSON_INPUTS_KEY], dict):
        document = document[JSON_INPUTS_KEY]
    if not isinstance(document, dict) or len(document) != 1 or not set(document) <= {JSON_DATA_KEY, name}:
        got = quoted(sorted(document)) if isinstance(document, dict) else type(document).__name__
        raise MalformedRequest(f"JSON body must be {{\"{JSON_DATA_KEY}\": \"<base64 image>\"}} or a list of them; "
                               f"got {got}")
    key, value = next(iter(document.items()))
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        raise MalformedRequest(f"'{key}' must be a base64 string (an encoded image) or a non-empty list of them")
    return [_b64(v, f"'{key}'" if len(values) == 1 else f"'{key}'[{i}]") for i, v in enumerate(values)]


def _b64(text: str, what: str) -> bytes:
    if text.startswith("data:") and DATA_URL_MARK in text[:64]:
        text = text.split(DATA_URL_MARK, 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise MalformedRequest(f"{what} is not valid base64: {err}") from None


def _v2_request(document: Any, name: str, preprocess: _Limited, answer_names: Sequence[str],
                header_length: str | None = None) -> DecodedRequest:
    """A v2 request with one BYTES tensor of encoded images; its errors answered in the protocol's format."""
    try:
        document, binary = v2_document(document, header_length)
        images = _v2_images(document, name, binary)
        pixels = preprocess.decode_many(images)
        options = V2Options(request_id(document), *_requested_outputs(document, answer_names))
    except RequestError as error:
        error.protocol = V2
        raise
    return DecodedRequest({name: pixels}, options)


def _v2_images(document: dict, name: str, binary: memoryview | None) -> list[bytes]:
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
        raise MalformedRequest(f"v2 input is named {quoted(tensor['name'])}; this model's input is {name!r}")
    if tensor["datatype"] != "BYTES":
        raise MalformedRequest(f"v2 datatype {quoted(tensor['datatype'])}: this model takes encoded images as a BYTES "
                               "tensor [N] (base64 strings in JSON, raw bytes in the binary extension)")
    shape = tensor["shape"]
    if not isinstance(shape, list) or len(shape) not in (1, 2) or shape[1:] not in ([], [1]) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise MalformedRequest(f"v2 shape of a BYTES image tensor must be [N] (or [N, 1]); got {quoted(shape)}")
    size = _parameters(tensor).get("binary_data_size")
    if size is None:
        data = tensor.get("data")
        if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
            raise MalformedRequest("v2 BYTES data must be a list of base64 strings (one encoded image each)")
        images = [_b64(v, f"v2 element {i}") for i, v in enumerate(data)]
    else:
        if binary is None:
            raise MalformedRequest(f"v2 input declares binary_data_size but the request has no {HEADER_LENGTH} header")
        if not isinstance(size, int) or size != len(binary):
            raise MalformedRequest(f"v2 binary_data_size is {quoted(size)}; the binary section holds {len(binary)} bytes")
        images = _split_bytes_elements(binary)
    if len(images) != shape[0]:
        raise MalformedRequest(f"v2 shape {shape} says {shape[0]} images; the tensor holds {len(images)}")
    return images


def _split_bytes_elements(binary: memoryview) -> list[memoryview]:
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
