"""One request as the worker hands it over, what the model accepts, and what decoding made of it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from handlers.bodies.open_inference import OUTPUTS, PLAIN, V2, V2Options
from handlers.errors import MalformedRequest

if TYPE_CHECKING:
    from handlers.audio import AudioPreprocess
    from handlers.image import ImagePreprocess


@dataclass(frozen=True)
class RequestInput:
    """One request: body, its content type, and the length of the JSON header when it uses the Open
    Inference Protocol's binary extension."""

    payload: Any
    content_type: str | None
    header_length: str | None = None
    accept: str | None = None  # application/x-npy asks for a binary answer
    fields: tuple[tuple[str, Any, str | None], ...] = ()  # multipart form: (name, value, content type) per field
    request_id: str | None = None  # TorchServe's id for the request, named in the worker's log


@dataclass(frozen=True)
class BodyOptions:
    """What a model accepts, built once per model: its input names, the v2 outputs it answers, whether it
    takes text (it ships a tokenizer), its image inputs, and the most instances one request may carry."""

    input_names: tuple[str, ...]
    answer_names: tuple[str, ...] = OUTPUTS
    accepts_text: bool = False
    images: Mapping[str, ImagePreprocess] | None = None
    max_instances: int | None = None
    audio: Mapping[str, AudioPreprocess] | None = None  # an audio model: WAV bodies, decoded by this
    text_pairs: bool = False  # extractive question answering: {"question": ..., "context": ...} bodies
    max_text_chars: int | None = None  # texts are cut to this many characters before tokenising


@dataclass(frozen=True)
class DecodedRequest:
    """One request's arrays by input name and, for an Open Inference Protocol request, what else it asked for."""

    arrays: dict[str, np.ndarray]
    v2: V2Options | None = None
    texts: list[str] | None = None  # a text request: the pipeline tokenises the batch's texts at once
    pairs: list[tuple[str, str]] | None = None  # a question answering request: (question, context) each
    tokens: Any = None  # set by the pipeline after tokenising: the tokenizer's view of this request's texts

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
