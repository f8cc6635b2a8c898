"""decode_payload: JSON and .npy bodies into arrays, with errors that name the problem."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from handlers.bodies.common import media_type
from handlers.bodies.decode import decode_payload
from handlers.errors import MalformedRequest, UnsupportedMediaType


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_media_type_strips_parameters() -> None:
    assert media_type("Application/JSON; charset=utf-8") == "application/json"
    assert media_type(None) == ""


def test_json_parsed_by_worker_single_instance() -> None:
    array = decode_payload({"data": [0.0, 0.5, 1.0]}, "application/json", "pixels")
    np.testing.assert_array_equal(array, [0.0, 0.5, 1.0])


def test_json_raw_bytes_list_of_instances() -> None:
    body = json.dumps({"data": [[1, 2], [3, 4]]}).encode()
    assert decode_payload(body, "application/json", "pixels").shape == (2, 2)


def test_json_accepts_input_name_as_key() -> None:
    assert decode_payload({"pixels": [1.0]}, "application/json", "pixels").shape == (1,)


@pytest.mark.parametrize(("body", "message"), [
    (b"{bad", "not valid JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"", "empty"),
    (b"[1, 2]", "must be an object"),
    (b'{"data": [1], "extra": 2}', "exactly one key"),
    (b'{"inputs": [1]}', "exactly one key"),
    (b'{"data": 5}', "must be a (nested) list"),
    (b'{"data": [[1, 2], [3]]}', "not a rectangular array"),
    (b'{"data": [1, null]}', "non-numbers"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_bad_json_is_malformed_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_payload(body, "application/json", "pixels")


def test_npy_round_trip_keeps_dtype_and_shape() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    decoded = decode_payload(npy(array), "application/x-npy", "pixels")
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, array)


def test_npy_detected_without_content_type() -> None:
    assert decode_payload(npy(np.zeros(3)), None, "pixels").shape == (3,)


def test_npy_object_array_is_refused_without_unpickling() -> None:
    body = npy(np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MalformedRequest, match="need pickle"):
        decode_payload(body, "application/x-npy", "pixels")


def test_truncated_npy_is_malformed() -> None:
    with pytest.raises(MalformedRequest, match="damaged or truncated"):
        decode_payload(npy(np.zeros((4, 64), np.float32))[:-10], "application/x-npy", "pixels")


@pytest.mark.parametrize("array", [
    np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
    np.float32(3.5),
    np.zeros((2, 0), np.float32),
    np.arange(4, dtype=">f8"),
])
def test_npy_layouts_and_byte_orders_round_trip(array: np.ndarray) -> None:
    decoded = decode_payload(npy(np.asarray(array)), "application/x-npy", "pixels")
    assert decoded.shape == np.shape(array) and decoded.dtype == np.asarray(array).dtype
    np.testing.assert_array_equal(decoded, array)


def test_npy_version_2_header_is_read() -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ones((2, 2), np.float32), version=(2, 0))
    np.testing.assert_array_equal(decode_payload(buffer.getvalue(), "application/x-npy", "x"), np.ones((2, 2)))


def test_npy_with_trailing_bytes_is_refused() -> None:
    with pytest.raises(MalformedRequest, match="header says"):
        decode_payload(npy(np.zeros(3, np.float32)) + b"extra", "application/x-npy", "pixels")


def test_structured_npy_is_refused() -> None:
    structured = np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])
    with pytest.raises(MalformedRequest, match="not a plain numeric array"):
        decode_payload(npy(structured), "application/x-npy", "pixels")


def test_npy_content_type_without_npy_header() -> None:
    with pytest.raises(MalformedRequest, match="not an .npy array"):
        decode_payload(b"hello", "application/x-npy", "pixels")


def test_unknown_content_type_is_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="image/png") as err:
        decode_payload(b"\x89PNG", "image/png", "pixels")
    assert err.value.status == 415


@pytest.mark.parametrize("content_type", [None, ""])
@pytest.mark.parametrize("body", [b'{"data": [1.5, -2, 1e+05]}', b'  \n[1]', b'{"data": [[1, 2], [3, 4]]}'])
def test_json_without_a_content_type_is_recognised_by_its_bytes(body: bytes, content_type: str | None) -> None:
    from handlers.bodies.decode import sniff_media_type

    assert sniff_media_type(body) == "application/json"
    assert sniff_media_type(bytearray(body)) == "application/json"
    if body.startswith(b"{"):
        assert decode_payload(bytearray(body), content_type, "pixels").dtype.kind in "if"


@pytest.mark.parametrize("body", [b"GIF89a\x01\x00", b"pixels=1,2,3", b"\x00\x01\x02", "plain text"])
def test_a_body_without_content_type_that_is_neither_json_nor_npy_is_415_naming_the_header(body) -> None:
    with pytest.raises(UnsupportedMediaType, match="has no content type.*set the Content-Type header to application/json"):
        decode_payload(body, None, "pixels")


@pytest.mark.parametrize("payload", [None, b"", b'{"data": [1]}', bytearray(npy(np.zeros(3, np.float32)))])
def test_curl_default_form_type_is_415_naming_the_header(payload) -> None:
    with pytest.raises(UnsupportedMediaType, match="curl's default for --data.*set the Content-Type header"):
        decode_payload(payload, "application/x-www-form-urlencoded", "pixels")


@pytest.mark.parametrize("data", [[1.5, True, 0.25], [[0.5, 1.0], [False, 0.0]], [1, 2, True]])
def test_a_json_boolean_among_numbers_is_refused_like_all_booleans(data: list) -> None:
    from handlers.config import InputContract
    from handlers.errors import InvalidInput

    with pytest.raises(InvalidInput, match="input 'pixels' holds booleans"):
        decode_payload({"data": data}, "application/json", "pixels")
    all_bool = decode_payload({"data": [True, False, True]}, "application/json", "pixels")
    with pytest.raises(InvalidInput) as refused:  # the same status as all-boolean JSON and boolean .npy
        InputContract("pixels", (3,)).as_batch(all_bool, 64)
    assert refused.value.status == InvalidInput.status == 422
