"""Open Inference Protocol (KServe v2, Triton): requests and answers, in JSON and with the binary
tensor extension that Triton's and KServe's clients use by default.

Binary extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by
raw little-endian tensor bytes; a tensor sent that way has ``parameters.binary_data_size`` instead of
``data``. An answer is binary for the outputs the request asks so (``outputs[].parameters.binary_data``
or ``parameters.binary_data_output``), with the same header on the response.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from handlers.contract import holds_bool
from handlers.encode import label_name
from handlers.errors import AnsweredError, MalformedRequest

PLAIN = AnsweredError.protocol  # our own JSON and .npy formats
V2 = "v2"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
DATATYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64,
             "INT32": np.int32, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8}
REQUEST_KEYS = {"id", "inputs", "outputs", "parameters"}
TENSOR_KEYS = {"name", "shape", "datatype", "data", "parameters"}
OUTPUTS = ("probabilities", "class", "label")  # what our classifiers answer, in this order


@dataclass(frozen=True)
class V2Options:
    """What a v2 request asked for besides its tensor: its id, which outputs, which of them binary."""

    request_id: str | None = None
    outputs: tuple[str, ...] = OUTPUTS
    binary_outputs: frozenset[str] = frozenset()


def is_v2(document: Any) -> bool:
    """A parsed JSON body that is an Open Inference Protocol request."""
    return isinstance(document, dict) and "inputs" in document


def split_binary(payload: Any, header_value: str) -> tuple[bytes, memoryview]:
    """The JSON header and the binary section of a binary-extension body."""
    try:
        header_length = int(header_value)
    except ValueError:
        raise MalformedRequest(f"{HEADER_LENGTH} must be an integer; got {header_value!r}") from None
    if not isinstance(payload, (bytes, bytearray)):
        raise MalformedRequest(f"{HEADER_LENGTH} is set but the body is not binary")
    if not 0 < header_length <= len(payload):
        raise MalformedRequest(f"{HEADER_LENGTH} is {header_length}; the body holds {len(payload)} bytes")
    view = memoryview(payload)
    return bytes(view[:header_length]), view[header_length:]


def decode_v2(document: dict, input_name: str, binary: memoryview | None = None) -> tuple[np.ndarray, V2Options]:
    """The input tensor of a v2 request (from ``data`` or the binary section) and what it asked for."""
    unknown = set(document) - REQUEST_KEYS
    if unknown:
        raise MalformedRequest(f"v2 request has unknown keys {sorted(unknown)}; allowed: {sorted(REQUEST_KEYS)}")
    inputs = document["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        count = len(inputs) if isinstance(inputs, list) else type(inputs).__name__
        raise MalformedRequest(f"v2 'inputs' must be a list of exactly one tensor object; got {count}")
    tensor = inputs[0]
    shape, dtype = _shape_and_dtype(tensor)
    if tensor["name"] != input_name:
        raise MalformedRequest(f"v2 input is named {tensor['name']!r}; this model's input is {input_name!r}")
    binary_size = _parameters(tensor).get("binary_data_size")
    if binary_size is None:
        array = _from_data(tensor, shape, dtype, binary)
    else:
        array = _from_binary(binary, binary_size, shape, dtype)
    request_id = document.get("id")
    return array, V2Options(None if request_id is None else str(request_id), *_requested_outputs(document))


def _shape_and_dtype(tensor: dict) -> tuple[list[int], np.dtype]:
    missing = {"name", "shape", "datatype"} - set(tensor)
    if missing:
        raise MalformedRequest(f"v2 input needs {sorted(missing)}")
    unknown = set(tensor) - TENSOR_KEYS
    if unknown:
        raise MalformedRequest(f"v2 input has unknown keys {sorted(unknown)}; allowed: {sorted(TENSOR_KEYS)}")
    dtype = DATATYPES.get(tensor["datatype"])
    if dtype is None:
        raise MalformedRequest(f"v2 datatype {tensor['datatype']!r} is not supported; use one of {sorted(DATATYPES)}")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise MalformedRequest(f"v2 shape must be a list of non-negative integers; got {shape!r}")
    return shape, np.dtype(dtype)


def _from_data(tensor: dict, shape: list[int], dtype: np.dtype, binary: memoryview | None) -> np.ndarray:
    if "data" not in tensor:
        raise MalformedRequest("v2 input needs 'data' (or parameters.binary_data_size with a binary body)")
    if binary is not None and len(binary):
        raise MalformedRequest(f"the body holds {len(binary)} binary bytes but no input declares binary_data_size")
    try:
        values = np.asarray(tensor["data"])
    except ValueError as err:
        raise MalformedRequest(f"v2 data is not a rectangular array of numbers: {err}") from None
    if values.dtype.kind not in "iuf" or holds_bool(tensor["data"]):  # numpy reads [1.5, true] as numbers
        raise MalformedRequest(f"v2 data must be numbers for datatype {tensor['datatype']}")
    expected = int(np.prod(shape, dtype=np.int64))
    if values.size != expected:
        raise MalformedRequest(f"v2 data holds {values.size} values; shape {shape} needs {expected}")
    return values.astype(dtype, copy=False).reshape(shape)


def _from_binary(binary: memoryview | None, size: Any, shape: list[int], dtype: np.dtype) -> np.ndarray:
    if binary is None:
        raise MalformedRequest(f"v2 input declares binary_data_size but the request has no {HEADER_LENGTH} header")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not isinstance(size, int) or size != expected:
        raise MalformedRequest(f"v2 binary_data_size is {size!r}; shape {shape} of {dtype.name} needs {expected} bytes")
    if len(binary) != size:
        raise MalformedRequest(f"the binary section holds {len(binary)} bytes; the input declares {size}")
    return np.frombuffer(binary, dtype=dtype.newbyteorder("<")).reshape(shape)


def _requested_outputs(document: dict) -> tuple[tuple[str, ...], frozenset[str]]:
    all_binary = bool(_parameters(document).get("binary_data_output", False))
    requested = document.get("outputs")
    if requested is None:
        return OUTPUTS, frozenset(OUTPUTS) if all_binary else frozenset()
    if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
        raise MalformedRequest("v2 'outputs' must be a list of objects with a 'name'")
    names = tuple(o["name"] for o in requested)
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise MalformedRequest(f"v2 outputs {unknown} are not produced; this model answers {list(OUTPUTS)}")
    binary = {o["name"] for o in requested if _parameters(o).get("binary_data", all_binary)}
    return names, frozenset(binary)


def _parameters(item: dict) -> dict:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise MalformedRequest(f"v2 'parameters' must be an object; got {type(parameters).__name__}")
    return parameters


def encode_v2(probabilities: np.ndarray, labels: Sequence[str], model_name: str,
              options: V2Options) -> tuple[bytes, int | None]:
    """A v2 answer with the requested outputs; with binary outputs, also the JSON header's length."""
    classes = probabilities.argmax(axis=1)
    rows = probabilities.shape[0]
    tensors = {
        "probabilities": ("FP32", list(probabilities.shape), probabilities.astype(np.float32)),
        "class": ("INT64", [rows], classes.astype(np.int64)),
        "label": ("BYTES", [rows], [label_name(labels, c) for c in classes.tolist()]),
    }
    outputs, binary_parts = [], []
    for name in options.outputs:
        datatype, shape, values = tensors[name]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if name in options.binary_outputs:
            raw = _bytes_elements(values) if datatype == "BYTES" else values.astype(values.dtype.newbyteorder("<")).tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        else:
            output["data"] = values if isinstance(values, list) else values.ravel().tolist()
        outputs.append(output)
    body: dict[str, Any] = {"model_name": model_name, "outputs": outputs}
    if options.request_id is not None:
        body["id"] = options.request_id
    header = json.dumps(body, separators=(",", ":")).encode()
    if not binary_parts:
        return header, None
    return header + b"".join(binary_parts), len(header)


def _bytes_elements(values: list[str]) -> bytes:
    """BYTES tensors in binary: each element as a 4-byte little-endian length, then its bytes."""
    encoded = [v.encode() for v in values]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def encode_v2_error(message: str) -> bytes:
    """The protocol's error answer: ``{"error": "<message>"}`` (its clients read a string there)."""
    return json.dumps({"error": message}, separators=(",", ":")).encode()
