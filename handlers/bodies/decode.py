"""Decode one request body into named arrays: the one place that picks a body format. Each format is a
module of its own beside this one (JSON arrays, .npy, .npz, the Open Inference Protocol, text, images);
no signature checks here (``signature.py`` does them)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from handlers.bodies.arrays import arrays_from_json
from handlers.bodies.audio import decode_audio_request
from handlers.bodies.common import JSON_TYPES, media_type, parse_json, starts_like
from handlers.bodies.images import decode_image_request
from handlers.bodies.npy import NPY_MAGIC, NPY_TYPES, decode_npy
from handlers.bodies.npz import decode_npz
from handlers.bodies.open_inference import V2, decode_v2, is_v2, v2_document
from handlers.bodies.request import BodyOptions, DecodedRequest, RequestInput
from handlers.bodies.text import PAIR_EXAMPLE, TEXT_TYPES, pairs_from_json, text_from_plain, texts_from_json
from handlers.errors import MalformedRequest, RequestError, UnsupportedMediaType, quoted
from handlers.image import PixelBudget

NPZ_TYPES = ("application/x-npz", "application/npz")
ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip of .npy files
# curl's default for --data. TorchServe's frontend reads such a body as form fields: the worker gets
# none of its bytes (or fragments split at '=' and '&'), so it cannot be recognised, only refused.
FORM_TYPE = "application/x-www-form-urlencoded"
SNIFF_BYTES = 64  # how far into a body sniff_media_type looks past leading whitespace for JSON
SET_CONTENT_TYPE = ("set the Content-Type header to application/json, application/x-npy or application/x-npz "
                    "(curl: --data-binary)")


def decode_request(request: RequestInput, options: BodyOptions, budget: PixelBudget | None = None) -> DecodedRequest:
    """One request -> its arrays by input name (or its texts, for a model with a tokenizer).

    Besides ``decode_arrays``' formats: Open Inference Protocol (v2) requests, in JSON or with the binary
    extension (``request.header_length`` is their ``Inference-Header-Content-Length``); for a model that
    takes text, ``{"text": ...}`` and ``text/plain`` bodies; for an image model, encoded images
    (``images.py``), also as multipart form fields, decoding at most what the batch's pixel ``budget`` has left.
    """
    if options.images:
        return decode_image_request(request, options, budget)
    if options.audio:
        return decode_audio_request(request, options)
    payload, names = request.payload, options.input_names
    if request.header_length is not None:
        return _decoded_v2(payload, names, options.answer_names, request.header_length)
    document = payload
    kind = media_type(request.content_type)
    if options.accepts_text and kind in TEXT_TYPES:
        if options.text_pairs:
            raise UnsupportedMediaType(f"this model answers questions about a text: send JSON {PAIR_EXAMPLE}")
        return DecodedRequest({}, texts=text_from_plain(payload, options.max_text_chars))
    # Triton's client sends v2 JSON without a content type: sniff it, as decode_arrays does.
    if isinstance(payload, (bytes, bytearray, str)) and payload and (
            kind in JSON_TYPES or (kind == "" and sniff_media_type(payload) in JSON_TYPES)):
        document = parse_json(payload)
    if options.text_pairs:  # before v2: {"inputs": [{"question", "context"}, ...]} is a list of inputs too
        pairs = pairs_from_json(document, options.max_text_chars, options.max_instances)
        if pairs is not None:
            return DecodedRequest({}, pairs=pairs)
    if is_v2(document):
        return _decoded_v2(document, names, options.answer_names)
    texts = (texts_from_json(document, options.max_text_chars, options.max_instances)
             if options.accepts_text and not options.text_pairs else None)
    if texts is not None:
        return DecodedRequest({}, texts=texts)
    return DecodedRequest(decode_arrays(document, request.content_type, names))


def _decoded_v2(document: Any, names: Sequence[str], answer_names: Sequence[str],
                header_length: str | None = None) -> DecodedRequest:
    """A v2 request; its rejections are answered in the protocol's own error format."""
    try:
        document, binary = v2_document(document, header_length)
        arrays, options = decode_v2(document, names, binary, answer_names)
    except RequestError as error:
        error.protocol = V2
        raise
    return DecodedRequest(arrays, options)


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
        return arrays_from_json(payload, names)
    if kind == "":
        kind = sniff_media_type(payload) or ""
        if not kind:
            raise UnsupportedMediaType(f"the request has no content type and its body is neither JSON, .npy nor "
                                       f".npz; {SET_CONTENT_TYPE}")
    if kind in NPZ_TYPES or (kind in NPY_TYPES and starts_like(payload, ZIP_MAGIC)):
        return decode_npz(bytes(payload) if isinstance(payload, bytearray) else payload)
    if kind in NPY_TYPES:
        if len(names) != 1:
            raise MalformedRequest(f"this model takes {len(names)} inputs ({', '.join(names)}); "
                                   "send them as .npz (application/x-npz) or JSON {\"inputs\": {...}}")
        return {names[0]: decode_npy(bytes(payload) if isinstance(payload, bytearray) else payload)}
    if kind in JSON_TYPES:
        return arrays_from_json(parse_json(payload), names)
    raise UnsupportedMediaType(
        f"content type {quoted(kind)} is not supported; send application/json, application/x-npy or application/x-npz"
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
    if starts_like(payload, NPY_MAGIC):
        return NPY_TYPES[0]
    if starts_like(payload, ZIP_MAGIC):
        return NPZ_TYPES[0]
    return JSON_TYPES[0] if bytes(payload[:SNIFF_BYTES]).lstrip()[:1] in (b"{", b"[") else None
