"""Build TorchServe's own Context and batch objects, as the worker does, without a server."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml
from ts.context import Context
from ts.protocol.otf_message_handler import create_predict_response
from ts.service import Service

ARTIFACTS = ("model.pt", "model.onnx", "model.pt2")  # the serialized files an archive of ours may hold


def make_context(model_dir: Path, serialized_file: str, batch_size: int = 8) -> Context:
    """A Context like the worker's, with model-config.yaml parsed into model_yaml_config."""
    model_yaml = yaml.safe_load((model_dir / "model-config.yaml").read_text())
    manifest = {"model": {"modelName": "test", "serializedFile": serialized_file, "handler": "handler.py"}}
    return Context("test", str(model_dir), manifest, batch_size, None, "0.12.0", model_yaml_config=model_yaml)


def worker_batch(bodies: list[tuple], decode_json: bool = True) -> list[dict]:
    """The batch the worker hands to a handler: per request, a 'body' parameter with its content type,
    and the request's HTTP headers (an optional third item: a dict).

    Mirrors ``otf_message_handler._retrieve_input_data``: JSON bodies are parsed by the worker
    (raw bytes are kept when parsing fails), everything else arrives as bytes.
    """
    batch = []
    for idx, (body, content_type, *headers) in enumerate(bodies):
        value = body
        if decode_json and content_type == "application/json" and isinstance(body, bytes):
            try:
                value = json.loads(body.decode("utf-8"))
            except Exception:  # the worker forwards the raw bytes, exactly like this
                value = body
        # A body of None: none reached the worker (the frontend reads a form-encoded body as form fields).
        parameters = [] if body is None else [{"name": "body", "contentType": content_type, "value": value}]
        batch.append({"requestId": f"req-{idx}".encode(), "parameters": parameters,
            "headers": [{"name": k.encode(), "value": v.encode()} for k, v in (headers[0] if headers else {}).items()]})
    return batch


def run_handler_raw(handler: Any, context: Context, bodies: list[tuple]) -> list[tuple[int, bytes, dict]]:
    """Call handle() exactly as ts.service.Service.predict does; return (status, body, response headers)."""
    headers, data, request_ids = Service.retrieve_data_for_inference(worker_batch(bodies))
    context.request_ids = request_ids
    context.request_processor = headers
    outputs = handler.handle(data, context)
    assert create_predict_response(outputs, request_ids, "Prediction success", 200, context=context)
    return [(context.get_response_status(idx)[0], out, context.get_response_headers(idx)) for idx, out in enumerate(outputs)]


def run_handler(handler: Any, context: Context, bodies: list[tuple]) -> list[tuple[int, dict]]:
    """Like ``run_handler_raw``, with every answer parsed as JSON."""
    return [(status, json.loads(body)) for status, body, _ in run_handler_raw(handler, context, bodies)]


# --- the frontend's wire format -----------------------------------------------------------------------
# A request as the Java frontend sends it to the worker: its id, HTTP headers and parameters (the body is one
# parameter named "body"; a multipart form sends one parameter per field, repeated names included).
WireRequest = tuple[list[tuple[str, bytes, str]], dict]  # ([(name, value, content type)], headers)


class _Wire:
    """A socket stand-in the worker's own reader (``retrieve_msg``) pulls frame bytes from."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def recv(self, length: int) -> bytes:
        chunk = self.data[self.offset:self.offset + length]
        self.offset += len(chunk)
        return chunk


def predict_frame(requests: list[WireRequest]) -> bytes:
    """The bytes of one PREDICT message for ``requests``, laid out as the frontend writes them."""
    import struct

    def field(data: bytes) -> bytes:
        return struct.pack("!i", len(data)) + data

    end = struct.pack("!i", -1)
    out = bytearray(b"I")
    for idx, (parameters, headers) in enumerate(requests):
        out += field(f"req-{idx}".encode())
        for name, value in headers.items():
            out += field(name.encode()) + field(value.encode())
        out += end
        for name, value, content_type in parameters:
            out += field(name.encode()) + field(content_type.encode()) + field(value)
        out += end
    out += end
    return bytes(out)


def run_handler_wire(handler: Any, context: Context, requests: list[WireRequest]) -> list[tuple[int, bytes, dict]]:
    """Parse ``requests`` from wire bytes with the worker's own reader (its JSON and text decoding included),
    then call handle() as ``Service.predict`` does; (status, body, response headers) per request."""
    from ts.protocol.otf_message_handler import retrieve_msg

    _, batch = retrieve_msg(_Wire(predict_frame(requests)))
    headers, data, request_ids = Service.retrieve_data_for_inference(batch)
    context.request_ids = request_ids
    context.request_processor = headers
    outputs = handler.handle(data, context)
    assert create_predict_response(outputs, request_ids, "Prediction success", 200, context=context)
    return [(context.get_response_status(idx)[0], out, context.get_response_headers(idx))
            for idx, out in enumerate(outputs)]


def body_request(body: bytes, content_type: str, headers: dict | None = None) -> WireRequest:
    """A request whose body is one parameter, as for any non-form POST."""
    return [("body", body, content_type)], dict(headers or {})


@contextmanager
def model_calls(handler: Any) -> Iterator[list[int]]:
    """The rows of every batch the handler's model runs while the block lasts (no answer tells a client how many
    instances ran together, so a test looks at the model's calls)."""
    backend = handler.pipeline.backend
    calls: list[int] = []
    original = backend.run_named

    def recorded(inputs: Any) -> Any:
        calls.append(int(next(iter(inputs.values())).shape[0]))
        return original(inputs)

    backend.run_named = recorded
    try:
        yield calls
    finally:
        del backend.run_named
