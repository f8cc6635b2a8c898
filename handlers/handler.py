"""TorchServe entry point: a thin adapter from TorchServe's hooks to InferencePipeline (any task;
the file keeps its first name because every archive names it as its handler).

Archived with ``--handler handlers/handler.py``; the ``handlers`` package travels
beside it in the .mar. TorchServe instantiates the one class defined here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes

from handlers.backends import Backend, load_backend
from handlers.bodies.common import media_type
from handlers.bodies.decode import FORM_TYPE
from handlers.bodies.open_inference import HEADER_LENGTH
from handlers.bodies.request import RequestInput
from handlers.config import MODEL_NAME, HandlerConfig
from handlers.errors import ConfigError
from handlers.form_fields import REPEAT_MARK, keep_repeated_fields
from handlers.pipeline import InferencePipeline, StageTimes
from handlers.thread_policy import load_on_fitting_threads

logger = logging.getLogger(__name__)

BODY_KEYS = ("body", "data")
ACCEPT = "Accept"


class InferenceHandler:
    """initialize/handle as TorchServe expects; everything else lives in the pipeline."""

    def __init__(self) -> None:
        self.pipeline: InferencePipeline | None = None

    def initialize(self, context: Any) -> None:
        """Read model-config.yaml, load the serialized model on the worker's device."""
        if not MODEL_NAME.fullmatch(context.model_name or ""):
            # TorchServe registers "../../x" or "a b", then cannot route DELETE /models/<name> to it: a worker
            # that refuses to load makes the registration fail, and TorchServe drops the model.
            raise ConfigError(f"model name {context.model_name!r} must match {MODEL_NAME.pattern}; register it "
                              "under another name")
        keep_repeated_fields()  # multipart: -F file=@a -F file=@b reaches us as two fields, not the last one
        config = HandlerConfig.from_model_yaml(context.model_yaml_config)
        backend = load_model(config, context)
        text_encoder = None
        if config.tokenizer is not None:
            from handlers.text_encoder import make_text_encoder

            text_encoder = make_text_encoder(Path(context.system_properties["model_dir"]) / config.tokenizer, config)
        self.pipeline = InferencePipeline(config, backend, context.model_name, text_encoder=text_encoder)
        logger.info("model %s ready: %s, task %s, signature %s", context.model_name, backend.describe(), config.task,
                    config.signature)

    def handle(self, data: list[dict] | None, context: Any) -> list[bytes] | None:
        """Answer one batch: per-request status, JSON content type, one body per request."""
        if data is None:  # workflow nodes are called once with no data at load time
            return None
        if self.pipeline is None:
            raise RuntimeError("handle() called before initialize()")
        requests = [request_input(row, context, idx) for idx, row in enumerate(data)]
        answers, times = self.pipeline.run(requests)
        for idx, answer in enumerate(answers):
            # No header tells a client about its batch-mates (how many instances others sent): batching is
            # visible in the metrics instead (HandlerBatches, HandlerBatchedInstances).
            context.set_response_status(answer.status, answer.phrase, idx)
            context.set_response_content_type(idx, answer.content_type)
            for name, value in answer.headers:
                context.set_response_header(idx, name, value)
        emit_metrics(context.metrics, times, [answer.status for answer in answers])
        return [answer.body for answer in answers]


def load_model(config: HandlerConfig, context: Any) -> Backend:
    """The archive's serialized model (or its members, for a composition) on the threads that fit it."""
    properties = context.system_properties
    model_dir = Path(properties["model_dir"])
    gpu_id = properties.get("gpu_id")
    if config.composition is not None:
        from handlers.composed_model import ComposedModel

        def load(threads: int) -> Backend:
            return ComposedModel.load(config.composition, model_dir, gpu_id, threads)
    else:
        serialized = context.manifest["model"].get("serializedFile")
        if not serialized:
            raise ValueError("the archive has no serialized model and model-config.yaml no handler.composition")

        def load(threads: int) -> Backend:
            return load_backend(model_dir / serialized, gpu_id, threads, config.cuda_graph_batch_sizes)
    backend, choice = load_on_fitting_threads(load, config, gpu_id is not None)
    logger.info("threads for %s: %s", context.model_name, choice.reason)
    return backend


def emit_metrics(metrics: Any, times: StageTimes, statuses: list[int]) -> None:
    """Per-stage time, real batch size and request errors by status, through TorchServe's metrics API.

    With ``model_metrics_auto_detect=true`` (config.properties) they appear on the Prometheus
    endpoint as HandlerDecodeMs, HandlerInferMs, HandlerEncodeMs, HandlerBatchInstances (the last
    batch), the counters HandlerBatches and HandlerBatchedInstances (their ratio is the mean batch
    size since start), HandlerRequestErrors{Status=...} and, for models with a dynamic dimension,
    HandlerPaddingEfficiency (real tokens / computed tokens of the batch) and HandlerSubBatches.
    """
    if metrics is None:  # contexts built outside a worker (unit tests) carry no metrics cache
        return
    for name, value in (("HandlerDecodeMs", times.decode_ms), ("HandlerInferMs", times.infer_ms),
                        ("HandlerEncodeMs", times.encode_ms)):
        metrics.add_time(name, value, None, "ms")
    metrics.add_metric("HandlerBatchInstances", times.instances, "count", metric_type=MetricTypes.GAUGE)
    if times.padding_efficiency is not None:
        metrics.add_metric("HandlerPaddingEfficiency", round(times.padding_efficiency, 4), "ratio",
                           metric_type=MetricTypes.GAUGE)
        metrics.add_metric("HandlerSubBatches", times.sub_batches, "count", metric_type=MetricTypes.GAUGE)
    if times.instances:
        metrics.add_counter("HandlerBatches", 1, None)
        metrics.add_counter("HandlerBatchedInstances", times.instances, None)
    for status in sorted(set(statuses) - {200}):
        metrics.add_counter("HandlerRequestErrors", statuses.count(status), None, [Dimension("Status", str(status))])


def request_input(row: dict, context: Any, idx: int) -> RequestInput:
    """Find the body of one request and its content type in TorchServe's batch row."""
    request_type = context.get_request_header(idx, "Content-Type") or context.get_request_header(idx, "content-type")
    if media_type(request_type) == FORM_TYPE:  # the frontend parsed the body as form fields: refused by decode
        return RequestInput(None, request_type, request_id=_request_id(context, idx))
    name = next((key for key in BODY_KEYS if key in row), None)
    if any(REPEAT_MARK in key for key in row):  # -F data=@a.png -F data=@b.png: a form, whatever its names
        name = None
    elif name is None and len(row) == 1:
        name = next(iter(row))
    if name is None:
        # A multipart form with several fields: each is a key of the row (image models read them all).
        fields = tuple((key, value, _content_type(context, idx, key)) for key, value in row.items())
        return RequestInput(None, None, fields=fields, request_id=_request_id(context, idx))
    header_length = _header(context, idx, HEADER_LENGTH)
    return RequestInput(row[name], _content_type(context, idx, name), header_length, _header(context, idx, ACCEPT),
                        request_id=_request_id(context, idx))


def _request_id(context: Any, idx: int) -> str | None:
    ids = getattr(context, "request_ids", None)
    return ids.get(idx) if isinstance(ids, dict) else None


def _content_type(context: Any, idx: int, name: str) -> str | None:
    # The worker stores each row key's content type as a request header named after the key.
    header = context.get_request_header(idx, name)
    return header.get("content-type") if isinstance(header, dict) else header


def _header(context: Any, idx: int, name: str) -> str | None:
    # HTTP header names are case-insensitive; the frontend passes them as the client spelled them.
    return context.get_request_header(idx, name) or context.get_request_header(idx, name.lower())
