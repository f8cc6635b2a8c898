"""Function nodes of our TorchServe workflows (.war): preprocess -> member model(s) -> postprocess/aggregate.

TorchServe 0.12 calls each function as ``fn(data, context)``, once with ``data=None`` at load
time, and always with one request per call (function nodes get batch size 1). Between nodes
bodies travel as bytes: preprocess hands members a float32 .npy, members (our classifier
handler with ``output: probabilities``) answer float32 .npy probabilities, and the last node
answers the same JSON as a single model.

What a workflow cannot do in 0.12: a node's status code never reaches the client (the
frontend always answers 200), and a node that raises is answered with 500
"Error executing <node>". So bad input is refused here, at the front, by raising: the client
gets a 500 naming ``preprocess`` (the detail is in the worker log), and no member runs. The
in-process composed handler answers the same input with the specific 4xx.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from handlers.composition import (CompositionConfig, as_logits, check_member_outputs, preprocess as scale,
                                  weighted_mean)
from handlers.config import HandlerConfig
from handlers.bodies.decode import decode_request
from handlers.bodies.npy import decode_npy
from handlers.bodies.open_inference import V2
from handlers.bodies.request import BodyOptions
from handlers.encode import PredictionEncoder, encode_npy, encode_predictions
from handlers.errors import MalformedRequest, RequestError
from handlers.handler import request_input

logger = logging.getLogger(__name__)

COMPOSITION_FILE = "composition.yaml"
BODY = "body"


class WorkflowInputRejected(RuntimeError):
    """Bad input at the front of a workflow; TorchServe turns it into 500 'Error executing preprocess'."""


class MemberAnswerInvalid(RuntimeError):
    """A member node answered something other than probabilities (its own error, or a wrong shape)."""


@functools.lru_cache(maxsize=None)
def load_settings(model_dir: str) -> tuple[HandlerConfig, CompositionConfig]:
    """The workflow's composition.yaml (same ``handler`` section as a composed model's model-config.yaml).

    Cached per directory: function nodes are plain functions with no object to keep state in.
    """
    document = yaml.safe_load((Path(model_dir) / COMPOSITION_FILE).read_text())
    config = HandlerConfig.from_model_yaml(document)
    if config.composition is None:
        raise ValueError(f"{COMPOSITION_FILE} has no handler.composition section")
    return config, config.composition


def preprocess(data: list[dict] | None, context: Any) -> list[bytes] | None:
    """Decode and validate the client's request once, scale it, hand members a float32 .npy."""
    config, composition = load_settings(context.system_properties["model_dir"])
    if data is None:
        return None
    out = []
    for idx, row in enumerate(data):
        try:
            batch = _accepted_batch(config, row, context, idx)
        except RequestError as error:
            logger.warning("workflow input rejected (%s %s): %s", error.status, error.phrase, error.message)
            raise WorkflowInputRejected(f"{error.status} {error.phrase}: {error.message}") from None
        out.append(encode_npy(scale(batch, composition.scale)))
    return out


def postprocess(data: list[dict] | None, context: Any) -> list[bytes] | None:
    """Pipeline end: the one member's probabilities -> predictions JSON."""
    return aggregate(data, context)


def aggregate(data: list[dict] | None, context: Any) -> list[bytes] | None:
    """Ensemble end: weighted mean of every member's probabilities -> predictions JSON."""
    config, composition = load_settings(context.system_properties["model_dir"])
    if data is None:
        return None
    encoder = PredictionEncoder(config.labels, config.top_k)
    out = []
    for row in data:
        mean = weighted_mean(_member_probabilities(row, composition), composition.weights)
        out.append(encode_predictions(encoder.rows(as_logits(mean))))
    return out


def _accepted_batch(config: HandlerConfig, row: dict, context: Any, idx: int) -> np.ndarray:
    request = request_input(row, context, idx)  # the same body/content-type lookup as models
    decoded = decode_request(request, BodyOptions((config.input.name,)))
    if decoded.protocol == V2:
        raise MalformedRequest("workflows answer plain JSON only; send {\"data\": ...} or .npy "
                               "(the in-process composed model speaks v2)")
    batch = config.input.as_batch(decoded.array, config.max_instances)
    config.input.check_values(batch)
    return batch


def _member_probabilities(row: dict, composition: CompositionConfig) -> dict[str, np.ndarray]:
    """Each member's answer from this row: one parent arrives as 'body', several under their node names."""
    names = list(composition.weights)
    bodies = {names[0]: row[BODY]} if len(names) == 1 and BODY in row else row
    probabilities = {}
    for name in names:
        body = bodies.get(name)
        if not isinstance(body, (bytes, bytearray)):
            raise MemberAnswerInvalid(f"member {name!r} sent no answer (got keys {sorted(row)})")
        try:
            probabilities[name] = decode_npy(bytes(body))
        except RequestError:
            raise MemberAnswerInvalid(f"member {name!r} answered {bytes(body)[:200]!r} instead of probabilities") from None
    check_member_outputs(probabilities)
    return probabilities
