"""Request bodies of a model whose input is audio: WAV files (``audio/wav`` or sniffed), base64 in JSON,
v2 BYTES tensors (JSON or binary) and multipart form uploads, each decoded by the input's
``AudioPreprocess``; raw samples at the model's rate (JSON arrays, .npy, v2 FP32) still work as before.

Every way ends in the same ``decode_many``, so a clip answers the same whichever way it came. The
padding mask (``attention_mask``, when the model takes one) is made here: 1 for each real sample.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from handlers.audio import AudioPreprocess, sniff_audio
from handlers.bodies.arrays import JSON_DATA_KEY, JSON_INPUTS_KEY, arrays_from_json
from handlers.bodies.common import JSON_TYPES, media_type, parse_json, starts_like
from handlers.bodies.encoded import WAV, b64_bytes, body_bytes, field_bytes, v2_encoded_files
from handlers.bodies.npy import NPY_MAGIC, NPY_TYPES, decode_npy
from handlers.bodies.open_inference import V2, V2Options, _requested_outputs, decode_v2, is_v2, request_id, v2_document
from handlers.bodies.request import BodyOptions, DecodedRequest, RequestInput
from handlers.errors import MalformedRequest, RequestError, TooManyInstances, UnsupportedMediaType, quoted

WAV_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")
RAW_TYPES = ("", "application/octet-stream")  # raw bytes whose format we sniff
AUDIO_KEY = "audio"  # {"audio": "<base64 WAV>"}, besides {"data": ...}
MASK_NAME = "attention_mask"  # the padding mask input an audio model may take beside its samples
SEND = "send a WAV file (audio/wav), JSON {\"audio\": \"<base64 WAV>\"} or raw samples"


def decode_audio_request(request: RequestInput, options: BodyOptions) -> DecodedRequest:
    """One request to an audio model -> ``{samples input: [n, longest], attention_mask: [n, longest]}``.

    More clips in one request than ``options.max_instances`` are refused (413) before any is decoded.
    """
    (name, preprocess), = options.audio.items()
    clips = _Clips(name, preprocess, options)
    payload, kind = request.payload, media_type(request.content_type)
    if request.fields:
        return clips.decoded([field_bytes(f, WAV) for f in request.fields])
    if request.header_length is not None:
        return clips.v2(payload, request.header_length)
    if kind in WAV_TYPES:
        return clips.decoded([body_bytes(payload, WAV)])
    if kind.startswith("audio/"):
        raise UnsupportedMediaType(f"content type {quoted(kind)} is not supported; this model accepts audio/wav bodies "
                                   "(PCM or float), JSON with base64 WAV, or raw samples")
    if isinstance(payload, (bytes, bytearray)) and kind in RAW_TYPES and sniff_audio(payload) is not None:
        return clips.decoded([payload])
    if payload is None or (isinstance(payload, (bytes, bytearray, str)) and len(payload) == 0):
        raise MalformedRequest(f"request body is empty; {SEND}")
    if isinstance(payload, (dict, list)):
        document = payload
    elif kind in JSON_TYPES or (kind == "" and _looks_like_json(payload)):
        document = parse_json(payload)
    elif starts_like(payload, NPY_MAGIC) and kind in NPY_TYPES + RAW_TYPES:
        return clips.with_mask({name: decode_npy(bytes(payload))})  # raw samples at the model's rate
    else:
        raise UnsupportedMediaType(f"content type {quoted(kind)} with a body that is not a WAV file; this model takes "
                                   f"audio: {SEND}")
    if is_v2(document):
        return clips.v2(document)
    encoded = _json_clips(document, name)
    if encoded is not None:
        return clips.decoded(encoded)
    return clips.with_mask(_raw_samples(document, name, options.input_names))


class _Clips:
    """Turns one request's clips (encoded or raw samples) into the model's named arrays."""

    def __init__(self, name: str, preprocess: AudioPreprocess, options: BodyOptions) -> None:
        self.name, self.preprocess, self.options = name, preprocess, options
        self.takes_mask = MASK_NAME in options.input_names

    def decoded(self, clips: Sequence[Any], v2: V2Options | None = None) -> DecodedRequest:
        limit = self.options.max_instances
        if limit is not None and len(clips) > limit:
            raise TooManyInstances(f"the request holds {len(clips)} clips; at most {limit} per request "
                                   "(refused before decoding)")
        samples, mask = self.preprocess.decode_many(clips)
        return DecodedRequest(self._named(samples, mask), v2)

    def with_mask(self, arrays: dict[str, np.ndarray], v2: V2Options | None = None) -> DecodedRequest:
        """Raw samples at the model's rate: every sample is real unless the client sent its own mask."""
        samples = arrays.get(self.name)
        if self.takes_mask and samples is not None and MASK_NAME not in arrays:
            arrays = {**arrays, MASK_NAME: np.ones(np.shape(samples), np.int64)}
        return DecodedRequest(arrays, v2)

    def _named(self, samples: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        return {self.name: samples, MASK_NAME: mask} if self.takes_mask else {self.name: samples}

    def v2(self, document: Any, header_length: str | None = None) -> DecodedRequest:
        """A v2 request: a BYTES tensor of WAV files, or FP32 samples; errors in the protocol's own format."""
        try:
            document, binary = v2_document(document, header_length)
            options = V2Options(request_id(document), *_requested_outputs(document, self.options.answer_names))
            tensors = document.get("inputs") if isinstance(document, dict) else None
            if isinstance(tensors, list) and len(tensors) == 1 and isinstance(tensors[0], dict) \
                    and tensors[0].get("datatype") == "BYTES":
                return self.decoded(v2_encoded_files(document, self.name, binary, WAV), options)
            arrays, options = decode_v2(document, self.options.input_names, binary, self.options.answer_names)
            return self.with_mask(arrays, options)
        except RequestError as error:
            error.protocol = V2
            raise


def _looks_like_json(payload: Any) -> bool:
    head = payload[:64] if isinstance(payload, (bytes, bytearray, str)) else b""
    head = head.encode() if isinstance(head, str) else bytes(head)
    return head.lstrip()[:1] in (b"{", b"[")


def _raw_samples(document: Any, name: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Raw samples at the model's rate: ``{"data": [...]}`` (or the input's name), or ``{"inputs": {...}}``."""
    if isinstance(document, dict) and len(document) == 1 and set(document) <= {JSON_DATA_KEY, AUDIO_KEY, name}:
        return arrays_from_json({name: next(iter(document.values()))}, (name,))
    return arrays_from_json(document, names)


def _json_clips(document: Any, name: str) -> list[bytes] | None:
    """``{"audio"|"data"|name: "<b64>" | ["<b64>", ...]}`` (or under ``"inputs"``); None for raw samples."""
    if isinstance(document, dict) and set(document) == {JSON_INPUTS_KEY} and isinstance(document[JSON_INPUTS_KEY], dict):
        document = document[JSON_INPUTS_KEY]
    if not isinstance(document, dict) or len(document) != 1 or not set(document) <= {AUDIO_KEY, JSON_DATA_KEY, name}:
        if isinstance(document, dict) and any(isinstance(v, str) for v in document.values()):
            raise MalformedRequest(f"JSON body must be {{\"{AUDIO_KEY}\": \"<base64 WAV>\"}} or a list of them; "
                                   f"got keys {quoted(sorted(document))}")
        return None
    key, value = next(iter(document.items()))
    values = value if isinstance(value, list) else [value]
    if not values or not any(isinstance(v, str) for v in values):
        return None  # numbers: raw samples
    if not all(isinstance(v, str) for v in values):
        raise MalformedRequest(f"'{key}' must be a base64 string (a WAV file) or a non-empty list of them")
    return [b64_bytes(v, f"'{key}'" if len(values) == 1 else f"'{key}'[{i}]") for i, v in enumerate(values)]
