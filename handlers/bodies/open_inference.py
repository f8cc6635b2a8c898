"""Open Inference Protocol (KServe v2, Triton): requests and answers, in JSON and with the binary
tensor extension that Triton's and KServe's clients use by default.

Binary extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by
raw little-endian tensor bytes; a tensor sent that way has ``parameters.binary_data_size`` instead of
``data``. An answer is binary for the outputs the request asks so (``outputs[].parameters.binary_data``
or ``parameters.binary_data_output``), with the same header on the response.
"""
from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from handlers.bodies.arrays import holds_bool
from handlers.bodies.common import parse_json
from handlers.encode import label_name
from handlers.errors import AnsweredError, MalformedRequest, quoted

PLAIN = AnsweredError.protocol  # our own JSON and .npy formats
V2 = "v2"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
DATATYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64,
             "INT32": np.int32, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
REQUEST_KEYS = {"id", "inputs", "outputs", "parameters"}
TENSOR_KEYS = {"name", "shape", "datatype", "data", "parameters"}
OUTPUTS = ("probabilities", "class", "label")  # what our (single-label) classifiers answer, in this order
HEADER_LENGTH_DIGITS = re.compile(r"[0-9]{1,10}")  # int() would also read "1_0_7", " 107", "+107" and other scripts' digits
MAX_ID_CHARS = 256  # the id is echoed in the answer: a longer one is refused, never echoed
MAX_ELEMENTS = 1 << 31  # a shape whose product exceeds this is refused before anything is allocated


@dataclass(frozen=True)
class V2Options:
    """What a v2 request asked for besides its tensors: its id, which outputs, which of them binary."""

    request_id: str | None = None
    outputs: tuple[str, ...] = OUTPUTS
    binary_outputs: frozenset[str] = frozenset()


def is_v2(document: Any) -> bool:
    """A parsed JSON body that is an Open Inference Protocol request (ours with named inputs maps
    ``inputs`` to an object instead: ``{"inputs": {"input_ids": ..., "attention_mask": ...}}``)."""
    return isinstance(document, dict) and "inputs" in document and not isinstance(document["inputs"], dict)


def split_binary(payload: Any, header_value: str) -> tuple[bytes, memoryview]:
    """The JSON header and the binary section of a binary-extension body."""
    if not isinstance(header_value, str) or not HEADER_LENGTH_DIGITS.fullmatch(header_value):
        raise MalformedRequest(f"{HEADER_LENGTH} must be a byte count of 1 to 10 digits 0-9; got {quoted(header_value)}")
    header_length = int(header_value)
    if not isinstance(payload, (bytes, bytearray)):
        raise MalformedRequest(f"{HEADER_LENGTH} is set but the body is not binary")
    if not 0 < header_length <= len(payload):
        raise MalformedRequest(f"{HEADER_LENGTH} is {header_length}; the body holds {len(payload)} bytes")
    view = memoryview(payload)
    return bytes(view[:header_length]), view[header_length:]


def v2_document(payload: Any, header_length: str | None) -> tuple[Any, memoryview | None]:
    """A v2 request's JSON document and, with the binary extension, the tensor bytes after it."""
    if header_length is None:
        return payload, None
    header, binary = split_binary(payload, header_length)
    document = parse_json(header)
    if not is_v2(document):
        raise MalformedRequest(f"a body with {HEADER_LENGTH} must be a v2 request with 'inputs'")
    return document, binary


def decode_v2(document: dict, input_names: str | Sequence[str], binary: memoryview | None = None,
              answer_names: Sequence[str] = OUTPUTS) -> tuple[dict[str, np.ndarray], V2Options]:
    """The input tensors of a v2 request by name (from ``data`` or the binary section) and what it asked for.

    ``answer_names`` are the outputs this model can answer (a classifier's: probabilities, class, label).
    """
    names = (input_names,) if isinstance(input_names, str) else tuple(input_names)
    unknown = set(document) - REQUEST_KEYS
    if unknown:
        raise MalformedRequest(f"v2 request has unknown keys {quoted(sorted(unknown))}; allowed: {sorted(REQUEST_KEYS)}")
    inputs = document["inputs"]
    if (not isinstance(inputs, list) or len(inputs) != len(names)
            or not all(isinstance(tensor, dict) for tensor in inputs)):
        count = len(inputs) if isinstance(inputs, list) else type(inputs).__name__
        wanted = "exactly one tensor object" if len(names) == 1 else f"{len(names)} tensor objects ({', '.join(names)})"
        raise MalformedRequest(f"v2 'inputs' must be a list of {wanted}; got {count}")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in inputs:
        shape, dtype = _shape_and_dtype(tensor)
        if tensor["name"] not in names:
            expected = f"this model's input is {names[0]!r}" if len(names) == 1 else f"this model's inputs are {list(names)}"
            raise MalformedRequest(f"v2 input is named {quoted(tensor['name'])}; {expected}")
        if tensor["name"] in arrays:
            raise MalformedRequest(f"v2 input {quoted(tensor['name'])} is sent twice")
        binary_size = _parameters(tensor).get("binary_data_size")
        if binary_size is None:
            arrays[tensor["name"]] = _from_data(tensor, shape, dtype)
        else:
            arrays[tensor["name"]] = _from_binary(binary, offset, binary_size, shape, dtype)
            offset += binary_size
    if binary is not None and offset != len(binary):
        if offset == 0:
            raise MalformedRequest(f"the body holds {len(binary)} binary bytes but no input declares binary_data_size")
        raise MalformedRequest(f"the binary section holds {len(binary)} bytes; the inputs declare {offset}")
    return arrays, V2Options(request_id(document), *_requested_outputs(document, answer_names))


def request_id(document: dict) -> str | None:
    """The request's ``id`` (a string, echoed in the answer), at most MAX_ID_CHARS long."""
    value = document.get("id")
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise MalformedRequest(f"v2 'id' must be a string; got {type(value).__name__}")
    value = str(value)
    if len(value) > MAX_ID_CHARS:
        raise MalformedRequest(f"v2 'id' holds {len(value):,} characters; at most {MAX_ID_CHARS} (it is echoed in the answer)")
    return value


def _shape_and_dtype(tensor: dict) -> tuple[list[int], np.dtype]:
    missing = {"name", "shape", "datatype"} - set(tensor)
    if missing:
        raise MalformedRequest(f"v2 input needs {sorted(missing)}")
    unknown = set(tensor) - TENSOR_KEYS
    if unknown:
        raise MalformedRequest(f"v2 input has unknown keys {quoted(sorted(unknown))}; allowed: {sorted(TENSOR_KEYS)}")
    datatype = tensor["datatype"]
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise MalformedRequest(f"v2 datatype {quoted(datatype)} is not supported; use one of {sorted(DATATYPES)}")
    return checked_shape(tensor["shape"]), np.dtype(dtype)


def checked_shape(shape: Any) -> list[int]:
    """A v2 shape: a list of non-negative integers whose product stays below MAX_ELEMENTS."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise MalformedRequest(f"v2 shape must be a list of non-negative integers; got {quoted(shape)}")
    if math.prod(shape) > MAX_ELEMENTS or any(d > MAX_ELEMENTS for d in shape):
        raise MalformedRequest(f"v2 shape {quoted(shape)} holds more than {MAX_ELEMENTS:,} elements")
    return shape


def _from_data(tensor: dict, shape: list[int], dtype: np.dtype) -> np.ndarray:
    if "data" not in tensor:
        raise MalformedRequest("v2 input needs 'data' (or parameters.binary_data_size with a binary body)")
    try:
        values = np.asarray(tensor["data"])
    except (ValueError, OverflowError, RecursionError) as err:
        raise MalformedRequest(f"v2 data is not a rectangular array of numbers: {quoted(str(err), 200)}") from None
    # numpy reads [1.5, true] as numbers: a boolean is refused wherever it stands, unless the datatype is BOOL.
    if values.dtype.kind not in ("b" if dtype.kind == "b" else "iuf") or (dtype.kind != "b" and holds_bool(tensor["data"])):
        raise MalformedRequest(f"v2 data must be numbers for datatype {tensor['datatype']}")
    if dtype.kind in "iu" and values.dtype.kind == "f":
        raise MalformedRequest(f"v2 data holds fractions; datatype {tensor['datatype']} needs integers")
    expected = math.prod(shape)
    if values.size != expected:
        raise MalformedRequest(f"v2 data holds {values.size} values; shape {shape} needs {expected}")
    if dtype.kind in "iu" and values.size and values.dtype.kind in "iu":
        info, low, high = np.iinfo(dtype), values.min(), values.max()
        if low < info.min or high > info.max:  # astype would wrap 1000 to -24 for INT8
            raise MalformedRequest(f"v2 data holds {low if low < info.min else high}, outside {tensor['datatype']} "
                                   f"[{info.min}, {info.max}]")
    return values.astype(dtype, copy=False).reshape(shape)


def _from_binary(binary: memoryview | None, offset: int, size: Any, shape: list[int], dtype: np.dtype) -> np.ndarray:
    """One tensor's bytes, at ``offset`` of the binary section (tensors follow each other in input order)."""
    if binary is None:
        raise MalformedRequest(f"v2 input declares binary_data_size but the request has no {HEADER_LENGTH} header")
    expected = math.prod(shape) * dtype.itemsize
    if not isinstance(size, int) or isinstance(size, bool) or size != expected:
        raise MalformedRequest(f"v2 binary_data_size is {quoted(size)}; shape {shape} of {dtype.name} needs {expected} bytes")
    if len(binary) < offset + size:
        declares = "the input declares" if offset == 0 else "the inputs declare at least"
        raise MalformedRequest(f"the binary section holds {len(binary)} bytes; {declares} {offset + size}")
    return np.frombuffer(binary[offset:offset + size], dtype=dtype.newbyteorder("<")).reshape(shape)


def _requested_outputs(document: dict, answer_names: Sequence[str]) -> tuple[tuple[str, ...], frozenset[str]]:
    all_binary = bool(_parameters(document).get("binary_data_output", False))
    requested = document.get("outputs")
    if requested is None:
        return tuple(answer_names), frozenset(answer_names) if all_binary else frozenset()
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                  for o in requested):
        raise MalformedRequest("v2 'outputs' must be a list of objects with a 'name' (a string)")
    names = tuple(o["name"] for o in requested)
    unknown = [n for n in names if n not in answer_names]
    if unknown:
        raise MalformedRequest(f"v2 outputs {quoted(unknown)} are not produced; this model answers {list(answer_names)}")
    if len(set(names)) != len(names):  # each is answered once: a repeated list would multiply the answer
        raise MalformedRequest(f"v2 'outputs' names an output more than once; name each of {list(answer_names)} at most once")
    binary = {o["name"] for o in requested if _parameters(o).get("binary_data", all_binary)}
    return names, frozenset(binary)


def _parameters(item: dict) -> dict:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise MalformedRequest(f"v2 'parameters' must be an object; got {type(parameters).__name__}")
    return parameters


Tensor = tuple[str, list[int], Any]  # v2 datatype, shape, values (an array, or a list of str for BYTES)


def classification_tensors(probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, Tensor]:
    """A classifier's v2 outputs: probabilities, the predicted class and its label."""
    classes = probabilities.argmax(axis=1)
    rows = probabilities.shape[0]
    return {
        "probabilities": ("FP32", list(probabilities.shape), probabilities.astype(np.float32)),
        "class": ("INT64", [rows], classes.astype(np.int64)),
        "label": ("BYTES", [rows], [label_name(labels, c) for c in classes.tolist()]),
    }


def encode_v2(tensors: dict[str, Tensor], model_name: str, options: V2Options) -> tuple[bytes, int | None]:
    """A v2 answer with the requested outputs; with binary outputs, also the JSON header's length."""
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
