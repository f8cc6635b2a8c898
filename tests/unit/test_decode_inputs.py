"""Named inputs from request bodies: JSON {"inputs": {...}}, .npz (never unpickled, size capped), errors."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from handlers.bodies.decode import decode_arrays, decode_request
from handlers.bodies.npz import MAX_UNPACKED_BYTES, decode_npz
from handlers.bodies.request import BodyOptions, RequestInput
from handlers.errors import MalformedRequest, TooComplex

NAMES = ("input_ids", "attention_mask")
OPTIONS = BodyOptions(NAMES)


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_json_inputs_by_name() -> None:
    arrays = decode_arrays({"inputs": {"input_ids": [1, 2], "attention_mask": [1, 1]}}, "application/json", NAMES)
    assert arrays["input_ids"].dtype == np.int64 and arrays["attention_mask"].tolist() == [1, 1]


@pytest.mark.parametrize(("document", "message"), [
    ({"data": [1, 2]}, 'send JSON {"inputs": {"input_ids": [...], ...}}'),
    ({"inputs": {"input_ids": [1], "token_type_ids": [0]}}, "JSON 'inputs' has ['token_type_ids']"),
    ({"inputs": {"input_ids": [[1, 2], [3]], "attention_mask": [1]}}, "'input_ids' is not a rectangular array"),
])
def test_json_input_errors_name_the_problem(document: dict, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message.replace("[", r"\[").replace("{", r"\{")):
        decode_arrays(document, "application/json", NAMES)


def test_npz_by_content_type_or_sniffed_and_a_raw_npy_is_refused_for_two_inputs() -> None:
    body = npz(input_ids=np.array([3, 4]), attention_mask=np.array([1, 1]))
    for content_type in ("application/x-npz", "", "application/octet-stream"):
        assert set(decode_request(RequestInput(body, content_type), OPTIONS).arrays) == set(NAMES)
    buffer = io.BytesIO()
    np.save(buffer, np.array([1, 2]))
    with pytest.raises(MalformedRequest, match="send them as .npz"):
        decode_arrays(buffer.getvalue(), "application/x-npy", NAMES)


def test_npz_of_objects_is_never_unpickled() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, input_ids=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MalformedRequest, match="object"):
        decode_npz(buffer.getvalue())


def test_npz_that_unpacks_past_the_cap_is_refused_before_reading() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("input_ids.npy", b"\0" * (MAX_UNPACKED_BYTES + 1))
    assert len(buffer.getvalue()) < MAX_UNPACKED_BYTES // 100  # a zip bomb: small body, huge content
    with pytest.raises(TooComplex, match="unpacks to"):
        decode_npz(buffer.getvalue())


@pytest.mark.parametrize(("body", "message"), [
    (b"PK\x03\x04garbage", "not an .npz archive"),
    (npz(**{f"a{i}": np.zeros(1) for i in range(17)}), "1 to 16 arrays"),
])
def test_damaged_npz_is_a_400(body: bytes, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message):
        decode_npz(body)


def test_v2_with_two_tensors_one_json_one_binary() -> None:
    ids = np.array([[5, 6, 7]], np.int64)
    header = json.dumps({"inputs": [
        {"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "parameters": {"binary_data_size": 24}},
        {"name": "attention_mask", "shape": [1, 3], "datatype": "INT64", "data": [1, 1, 0]}]}).encode()
    decoded = decode_request(RequestInput(header + ids.tobytes(), "", str(len(header))), OPTIONS)
    assert decoded.arrays["input_ids"].tolist() == [[5, 6, 7]] and decoded.arrays["attention_mask"].tolist() == [[1, 1, 0]]
    with pytest.raises(MalformedRequest, match="2 tensor objects"):
        decode_request(RequestInput(json.dumps({"inputs": [{"name": "input_ids", "shape": [1], "datatype": "INT64",
                                                            "data": [1]}]}).encode(), "application/json"), OPTIONS)
