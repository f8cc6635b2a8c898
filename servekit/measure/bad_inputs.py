"""The bad-input matrix: requests that must each get a specific 4xx, while batch-mates get 200."""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from servekit.measure import hostile_bodies as hostile
from servekit.serve.client import NPY_CONTENT_TYPE, npy_bytes

JSON = "application/json"


@dataclass(frozen=True)
class BadInput:
    """One malformed request and the answer it must get."""

    name: str
    body: bytes
    content_type: str
    status: int
    message: str  # a fragment the error message must contain
    headers: dict = field(default_factory=dict)  # request headers besides Content-Type


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _pickled_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"rm -rf": "/"}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _npy_header_only(header: dict) -> bytes:
    """An .npy header that promises more data than follows (a memory-exhaustion attempt)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def bad_inputs(shape: Sequence[int], max_instances: int, max_request_size: int,
               input_name: str) -> list[BadInput]:
    """Every case for a model whose input ``input_name`` has instances of ``shape`` (values in [0, 1])."""
    shape = tuple(shape)
    good = np.full(shape, 0.5, np.float32)
    wrong_shape = np.full((*shape[:-1], shape[-1] + 1), 0.5).tolist()
    dims = ", ".join(map(str, shape))
    nan = good.copy()
    nan.flat[0] = np.nan
    inf_json = json.dumps({"data": good.tolist()}).replace("0.5", "Infinity", 1).encode()
    truncated = npy_bytes(good)[:-7]
    huge_header = _npy_header_only({"descr": "<f4", "fortran_order": False, "shape": (999_999_999,)}) + b"\0" * 4
    return [
        BadInput("malformed JSON", b'{"data": [0.5, 0.5', JSON, 400, "not valid JSON"),
        BadInput("empty body", b"", JSON, 400, "empty"),
        BadInput("JSON array at top level", _json([good.tolist()]), JSON, 400, "must be an object"),
        BadInput("unknown key", _json({"pixels_": good.tolist()}), JSON, 400, "exactly one key"),
        BadInput("v2 inputs not tensors", _json({"inputs": good.tolist()}), JSON, 400, "exactly one tensor"),
        BadInput("v2 unsupported datatype", _json(v2_request(good, input_name, "BYTES")), JSON, 400, "datatype 'BYTES'"),
        BadInput("v2 wrong input name", _json(v2_request(good, input_name + "_x")), JSON, 400, "this model's input is"),
        BadInput("v2 shape and data disagree", _json({**v2_request(good, input_name), "inputs": [
            {**v2_request(good, input_name)["inputs"][0], "shape": [1, 2]}]}), JSON, 400, "needs 2"),
        BadInput("extra key", _json({"data": good.tolist(), "x": 1}), JSON, 400, "exactly one key"),
        BadInput("data not a list", _json({"data": "pixels"}), JSON, 400, "must be a (nested) list"),
        BadInput("ragged array", _json({"data": [[0.5], [0.5, 0.5]]}), JSON, 400, "rectangular"),
        BadInput("null values", _json({"data": [None] * shape[-1]}), JSON, 400, "non-numbers"),
        BadInput("deeply nested JSON", b'{"data": ' + b"[" * 50000 + b"]" * 50000 + b"}", JSON, 400, "nested too deeply"),
        BadInput("non-UTF-8 bytes", b'{"data": "\xff\xfe"}', JSON, 400, "UTF-8"),
        BadInput("wrong shape", _json({"data": wrong_shape}), JSON, 422, f"expected [{dims}]"),
        BadInput("wrong rank", _json({"data": [[good.tolist()]]}), JSON, 422, "has shape"),
        BadInput("zero instances", _json({"data": []}), JSON, 422, "shape [0]"),
        BadInput("strings", _json({"data": np.full(shape, "a").tolist()}), JSON, 422, "expected numbers"),
        BadInput("booleans", _json({"data": np.full(shape, True).tolist()}), JSON, 422, "dtype bool"),
        BadInput("NaN", json.dumps({"data": nan.tolist()}).encode(), JSON, 422, "NaN/Inf"),
        BadInput("Infinity", inf_json, JSON, 422, "NaN/Inf"),
        BadInput("above range", _json({"data": np.full(shape, 2.0).tolist()}), JSON, 422, "above the allowed maximum"),
        BadInput("below range", _json({"data": np.full(shape, -1.0).tolist()}), JSON, 422, "below the allowed minimum"),
        BadInput("too many instances", npy_bytes(np.zeros((max_instances + 1, *shape), np.float32)), NPY_CONTENT_TYPE,
                 413, f"at most {max_instances} per request"),
        BadInput("npy of Python objects (pickle)", _pickled_npy(), NPY_CONTENT_TYPE, 400, "need pickle"),
        BadInput("truncated npy", truncated, NPY_CONTENT_TYPE, 400, "truncated"),
        BadInput("npy claiming a huge shape", huge_header, NPY_CONTENT_TYPE, 400, "truncated"),
        BadInput("npy with trailing bytes", npy_bytes(good) + b"junk", NPY_CONTENT_TYPE, 400, "header says"),
        BadInput("npy complex dtype", npy_bytes(good.astype(np.complex64)), NPY_CONTENT_TYPE, 422, "complex64"),
        BadInput("npy structured dtype", npy_bytes(np.zeros(2, dtype=[("a", "<f4")])), NPY_CONTENT_TYPE, 400,
                 "plain numeric"),
        BadInput("npy body sent as text", b"\x93NUMPY garbage", "text/plain", 415, "text/plain"),
        BadInput("unsupported content type", b"GIF89a", "image/gif", 415, "image/gif"),
        BadInput("body over max_request_size", b"0" * (max_request_size + 1), JSON, 413, ""),
        *hostile_tensor_bodies(good, input_name),
    ]


def hostile_tensor_bodies(good: np.ndarray, input_name: str) -> list[BadInput]:
    """The issue-20 review's requests against a tensor model: each once grew an answer past the response limit,
    cost seconds or gigabytes, or raised outside any request (503 for the whole batch)."""
    huge = "é" * 1_000_000  # 6 MB once escaped in a JSON answer
    tensor = v2_request(good, input_name)["inputs"][0]
    v2_header = _json({"inputs": [{**tensor, "data": None, "parameters": {"binary_data_size": good.nbytes}}]}
                      ).replace(b'"data": null, ', b"")
    raw = np.ascontiguousarray(good, "<f4").tobytes()
    return [
        BadInput("unknown key of a million characters", json.dumps({"data": good.tolist(), huge: 1},
                                                                   ensure_ascii=False).encode(), JSON, 400,
                 "characters)"),
        BadInput("v2 input name of a million characters", json.dumps({"inputs": [{**tensor, "name": huge}]},
                                                                     ensure_ascii=False).encode(), JSON, 400,
                 "characters)"),
        BadInput("v2 id of 300 characters", _json({**v2_request(good, input_name), "id": "é" * 300}), JSON, 400,
                 "at most 256"),
        BadInput("v2 outputs repeated", _json({**v2_request(good, input_name), "outputs": [{"name": "probabilities"}] * 3}),
                 JSON, 400, "more than once"),
        BadInput("v2 datatype a list", _json({"inputs": [{**tensor, "datatype": ["FP32"]}]}), JSON, 400, "not supported"),
        BadInput("v2 shape 10**30", _json({"inputs": [{**tensor, "shape": [10 ** 30]}]}), JSON, 400, "holds more than"),
        BadInput("v2 INT8 data past its range", _json({"inputs": [{**tensor, "datatype": "INT8",
                                                                   "data": [1000] * good.size}]}), JSON, 400, "outside INT8"),
        BadInput("Inference-Header-Content-Length 1_0_7", v2_header + raw, "application/octet-stream", 400,
                 "digits 0-9", {"Inference-Header-Content-Length": "_".join(str(len(v2_header)))}),
        BadInput("npz whose directory lies about sizes", hostile.lying_npz(256 * 1024 * 1024), "application/x-npz", 400,
                 "npz member"),
        BadInput("npy version 2 header and nothing after", b"\x93NUMPY\x02\x00\x00\x00", NPY_CONTENT_TYPE, 400,
                 "truncated"),
        BadInput("npy shape 2^32 x 2^32", hostile.npy_header("<f4", "(4294967296, 4294967296)"), NPY_CONTENT_TYPE, 400,
                 "damaged or truncated"),
        BadInput("npy shape 10**20", hostile.npy_header("<f4", "(100000000000000000000,)"), NPY_CONTENT_TYPE, 400,
                 "digits"),
        BadInput("npy dimension of 5,000 digits", hostile.npy_header("<f4", "(" + "9" * 5000 + ",)"), NPY_CONTENT_TYPE,
                 400, "digits"),
        BadInput("npy dtype |S0", hostile.npy_header("|S0", "(8,)"), NPY_CONTENT_TYPE, 400, "has no size"),
    ]


def v2_request(instance: np.ndarray, name: str, datatype: str = "FP32") -> dict:
    """An Open Inference Protocol request for one instance."""
    return {"id": "r1", "inputs": [{"name": name, "shape": [1, *instance.shape], "datatype": datatype,
                                    "data": instance.ravel().tolist()}]}


def good_body(shape: Sequence[int], value: float = 0.5) -> bytes:
    """A valid one-instance npy request."""
    return npy_bytes(np.full(tuple(shape), value, np.float32))


def bad_images(max_pixels: int, input_name: str) -> list[BadInput]:
    """Every bad-image case for a model whose input ``input_name`` is an image of at most ``max_pixels``."""
    import base64

    from servekit.build.images import encode, sample_photos

    photo = encode(sample_photos()[0])
    side = int(max_pixels ** 0.5) + 1
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return [
        BadInput("truncated JPEG", photo[:len(photo) // 3], "image/jpeg", 400, "truncated"),
        BadInput("corrupt JPEG", photo[:20] + bytes(range(256)) * 8, "image/jpeg", 400, "damaged"),
        BadInput("not an image", b"hello, world", "image/png", 400, "not a JPEG, PNG or WebP"),
        BadInput("empty image body", b"", "image/jpeg", 400, "empty"),
        BadInput("GIF content type", b"GIF89a" + b"\0" * 30, "image/gif", 415, "image/gif"),
        BadInput("BMP bytes", b"BM" + b"\0" * 60, "application/octet-stream", 415, "is BMP"),
        BadInput("TIFF content type", b"II*\x00" + b"\0" * 60, "image/tiff", 415, "image/tiff"),
        BadInput("a tensor for an image model", npy_bytes(np.zeros((3, 8, 8), np.float32)), NPY_CONTENT_TYPE, 415,
                 "takes images"),
        BadInput("decompression bomb (PNG header)", png_declaring(side, side), "image/png", 413,
                 "refused before decoding"),
        BadInput("bomb past Pillow's own limit", png_declaring(30_000, 30_000), "image/png", 413,
                 "decompression bomb"),
        BadInput("base64 that is not", _json({"data": "!!not base64!!"}), JSON, 400, "not valid base64"),
        BadInput("base64 of a truncated JPEG", _json({"data": b64(photo[:500])}), JSON, 400, "truncated"),
        BadInput("JSON numbers for an image", _json({"data": [0.5, 0.5]}), JSON, 400, "base64 string"),
        BadInput("v2 FP32 tensor for an image", _json(v2_request(np.zeros(4, np.float32), input_name)), JSON, 400,
                 "BYTES"),
        BadInput("v2 BYTES count mismatch", _json({"inputs": [{"name": input_name, "shape": [2], "datatype": "BYTES",
                                                               "data": [b64(photo)]}]}), JSON, 400, "says 2 images"),
        *hostile_images(max_pixels, input_name, photo),
    ]


def hostile_images(max_pixels: int, input_name: str, photo: bytes) -> list[BadInput]:
    """The issue-20 review's image requests: metadata floods, images that together decode past the request's
    pixel budget, a frame its data does not fill, damaged EXIF, an SVG, a 0x0 PNG."""
    import base64

    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    side = int((max_pixels * 0.8) ** 0.5)  # under the per-image cap; two of them are over the request's budget
    junk = b64(photo)
    junk = junk[:100] + "*" + junk[100:]
    header = _json({"inputs": [{"name": input_name, "shape": [1], "datatype": "BYTES",
                                "parameters": {"binary_data_size": 4 + 100}}]})
    overrun = header + struct.pack("<I", 5000) + b"\0" * 100  # says 5,000 bytes follow; 100 do
    return [
        BadInput("PNG with 50,000 empty chunks", hostile.png_with_chunks(50_000), "image/png", 413, "PNG chunks"),
        BadInput("JPEG with 100,000 empty segments", hostile.jpeg_with_segments(100_000), "image/jpeg", 413,
                 "JPEG segments"),
        BadInput("images decoding past the request's budget", _json({"data": [b64(hostile.lossless_webp(side))] * 2}),
                 JSON, 413, "per request"),
        BadInput("JPEG declaring 4x the rows its data holds", hostile.jpeg_declaring_more_rows(4), "image/jpeg", 400,
                 "scan data ends before"),
        *[BadInput(f"JPEG with damaged EXIF ({kind})", hostile.jpeg_with_exif(bytes.fromhex(blob)), "image/jpeg", 400,
                   "damaged EXIF") for kind, blob in sorted(hostile.DAMAGED_EXIF.items())],
        BadInput("SVG sent as octet-stream", b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>",
                 "application/octet-stream", 415, "is SVG"),
        BadInput("0x0 PNG", png_declaring(0, 0), "image/png", 400, "header cannot be read"),
        BadInput("base64 with a junk character", _json({"data": junk}), JSON, 400, "not valid base64"),
        BadInput("v2 BYTES length prefix past the data", overrun, "application/octet-stream", 400, "declares 5000 bytes",
                 {"Inference-Header-Content-Length": str(len(header))}),
    ]


def png_declaring(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header is rewritten to declare ``width x height``: tiny on the wire, huge if decoded."""
    import struct
    import zlib

    from servekit.build.images import encode

    small = encode(np.zeros((1, 1), np.uint8), "PNG")
    chunk = b"IHDR" + struct.pack(">II", width, height) + small[24:29]
    return small[:8] + small[8:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[33:]


def bad_audio(input_name: str, max_seconds: float, max_instances: int, sampling_rate: int = 16_000) -> list[BadInput]:
    """Every bad-audio case for a model whose samples input is ``input_name`` (clips up to ``max_seconds``)."""
    import base64

    from servekit.examples.zoo import tone, wav_bytes

    good = wav_bytes(tone(0.3, rate=sampling_rate), sampling_rate)
    b64 = base64.b64encode(good).decode()
    return [
        BadInput("truncated WAV", good[:60], "audio/wav", 400, "truncated"),
        BadInput("not a WAV", b"not a wav at all", "audio/wav", 400, "not a WAV file"),
        BadInput("empty audio body", b"", "audio/wav", 400, "empty"),
        BadInput("MP3 bytes sent as WAV", b"ID3\x04\x00\x00\x00\x00\x00\x00 mp3 bytes", "audio/wav", 415, "is MP3"),
        BadInput("MP3 content type", b"\xff\xfb\x90\x00 mp3 frame", "audio/mpeg", 415, "audio/mpeg"),
        BadInput("clip too long", wav_bytes(tone(max_seconds + 1.0, rate=sampling_rate), sampling_rate), "audio/wav",
                 413, "refused before decoding"),
        BadInput("clip too short", wav_bytes(tone(0.005, rate=sampling_rate), sampling_rate), "audio/wav", 422,
                 "lasts 0.005 s"),
        BadInput("rate that does not resample cheaply", wav_bytes(tone(0.3, rate=44_099), 44_099), "audio/wav", 422,
                 "does not resample cheaply"),
        BadInput("base64 that is not", _json({"audio": "!!not base64!!"}), JSON, 400, "not valid base64"),
        BadInput("more clips than allowed", _json({"audio": [b64] * (max_instances + 1)}), JSON, 413,
                 f"{max_instances + 1} clips"),
        BadInput("audio JSON with another key", _json({"audio": b64, "extra": 1}), JSON, 400, "JSON body must be"),
        BadInput("v2 BYTES count mismatch", _json({"inputs": [{"name": input_name, "shape": [2], "datatype": "BYTES",
                                                               "data": [b64]}]}), JSON, 400, "says 2 clips"),
        BadInput("an image for an audio model", b"\x89PNG\r\n\x1a\n" + bytes(40), "image/png", 415, "not a WAV file"),
        # Client text is never echoed whole: each answer stays small whatever the body holds.
        BadInput("v2 id of 100,000 characters", _json({"id": "\u00e9" * 100_000, "inputs": [
            {"name": input_name, "shape": [1], "datatype": "BYTES", "data": [b64]}]}), JSON, 400, "at most"),
        BadInput("v2 input name of 100,000 characters", _json({"inputs": [
            {"name": "\u00e9" * 100_000, "shape": [1], "datatype": "BYTES", "data": [b64]}]}), JSON, 400,
            "(100,000 characters)"),
        BadInput("audio JSON with 20,000 keys", _json({f"key{i}": "x" for i in range(20_000)}), JSON, 400,
                 "JSON body must be"),
    ]


def bad_questions(max_instances: int) -> list[BadInput]:
    """Every bad body for an extractive question answering model (question/context JSON)."""
    good = {"question": "who works ?", "context": "john works"}
    return [
        BadInput("question without context", _json({"question": "who ?"}), JSON, 400, "exactly the keys"),
        BadInput("empty question", _json({"question": " ", "context": "x"}), JSON, 400, "question is empty"),
        BadInput("question not a string", _json({"inputs": [good, {"question": 1, "context": "x"}]}), JSON, 400,
                 "non-empty strings"),
        BadInput("question too long for any window", _json({"question": "who " * 1000, "context": "x"}), JSON, 422,
                 "at most"),
        BadInput("context needing too many windows", _json({"question": "who ?", "context": "paris " * 20_000}), JSON,
                 413, "windows"),
        BadInput("more questions than allowed", _json({"inputs": [good] * (max_instances + 1)}), JSON, 413,
                 f"{max_instances + 1} questions"),
        BadInput("plain text to a QA model", b"who works?", "text/plain", 415, "answers questions"),
        BadInput("QA body that is not JSON", b'{"question": "who', JSON, 400, "not valid JSON"),
    ]


def bad_texts(max_instances: int = 64, input_names: Sequence[str] = ("input_ids", "attention_mask")) -> list[BadInput]:
    """Every bad text body for a model that takes text through ``input_names`` (token classification among them):
    each a 4xx for itself alone. 5 MB of text is cut to the model's length before tokenising: answered, quickly."""
    too_far = {name: [[2, 10**6, 3] if name == "input_ids" else [0, 0, 0] if name == "token_type_ids" else [1, 1, 1]]
               for name in input_names}
    return [
        BadInput("empty text", _json({"text": ""}), JSON, 400, "is empty"),
        BadInput("an empty text in a list", _json({"text": ["rain", ""]}), JSON, 400, "is empty"),
        BadInput("whitespace text/plain", b"   ", "text/plain", 400, "is empty"),
        BadInput("empty text body", b"", "text/plain", 400, "empty"),
        BadInput("empty text list", _json({"text": []}), JSON, 400, "non-empty list of strings"),
        BadInput("text not a string", _json({"text": [1, 2]}), JSON, 400, "non-empty list of strings"),
        BadInput("a lone surrogate", b'{"text": ["rain", "\\ud800 snow"]}', JSON, 400, "surrogate"),
        BadInput("text/plain that is not UTF-8", b"\xff\xfe rain", "text/plain", 400, "UTF-8"),
        BadInput("more texts than allowed", _json({"text": ["a"] * (max_instances + 1)}), JSON, 413,
                 f"{max_instances + 1} texts"),
        BadInput("token ids past the vocabulary", _json({"inputs": too_far}), JSON, 422, "above the allowed maximum"),
        BadInput("5 MB of text/plain (answered)", b"rain " * 1_000_000, "text/plain", 200, ""),
    ]


