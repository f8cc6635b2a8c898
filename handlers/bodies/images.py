"""Request bodies of a model whose input is an image: raw image bytes, base64 in JSON, v2 BYTES tensors
(JSON or binary) and multipart form uploads, each decoded by the input's ``ImagePreprocess``.

Every way ends in the same ``decode_many``, so a photo answers the same whichever way it came.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from handlers.bodies.arrays import JSON_DATA_KEY, JSON_INPUTS_KEY
from handlers.bodies.common import JSON_TYPES, media_type, parse_json
from handlers.bodies.encoded import IMAGE, b64_bytes, body_bytes, field_bytes, v2_encoded_files
from handlers.bodies.request import BodyOptions, DecodedRequest, RequestInput
from handlers.errors import MalformedRequest, RequestError, TooManyInstances, UnsupportedMediaType, quoted
from handlers.image import IMAGE_CONTENT_TYPES, ImagePreprocess, PixelBudget, sniff_format
from handlers.bodies.open_inference import (V2, V2Options, _requested_outputs, is_v2, request_id, v2_document)

RAW_TYPES = ("", "application/octet-stream")  # raw bytes whose format we sniff
ACCEPTED_TYPES = "image/jpeg, image/png or image/webp"


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
        return DecodedRequest({name: preprocess.decode_many([field_bytes(f, IMAGE) for f in fields], "image")})
    if header_length is not None:
        return _v2_request(payload, name, preprocess, answer_names, header_length)
    kind = media_type(content_type)
    if kind.startswith("image/"):
        if kind not in IMAGE_CONTENT_TYPES:
            raise UnsupportedMediaType(f"content type {quoted(kind)} is not supported; this model accepts {ACCEPTED_TYPES} "
                                       "bodies, or JSON with base64 images")
        return DecodedRequest({name: preprocess.decode_many([body_bytes(payload, IMAGE)])})
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
    return [b64_bytes(v, f"'{key}'" if len(values) == 1 else f"'{key}'[{i}]") for i, v in enumerate(values)]


def _v2_request(document: Any, name: str, preprocess: _Limited, answer_names: Sequence[str],
                header_length: str | None = None) -> DecodedRequest:
    """A v2 request with one BYTES tensor of encoded images; its errors answered in the protocol's format."""
    try:
        document, binary = v2_document(document, header_length)
        images = v2_encoded_files(document, name, binary, IMAGE)
        pixels = preprocess.decode_many(images)
        options = V2Options(request_id(document), *_requested_outputs(document, answer_names))
    except RequestError as error:
        error.protocol = V2
        raise
    return DecodedRequest({name: pixels}, options)
