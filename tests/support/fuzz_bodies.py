"""Hostile request bodies for fuzzing the request path: random bytes and seeded mutations of every body
format the handler reads (JSON, .npy, .npz, v2 JSON and binary, JPEG/PNG/WebP, multipart, text)."""
from __future__ import annotations

import base64
import io
import json
import random
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np

from servekit.measure.hostile_bodies import exif_blob, jpeg_declaring_more_rows, jpeg_with_exif, png_with_chunks

JSON = "application/json"
NPY = "application/x-npy"
NPZ = "application/x-npz"
OCTET = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class FuzzBody:
    """One generated request: what it is (for the failure message), its parameters and request headers."""

    label: str
    parameters: tuple[tuple[str, bytes, str], ...]  # (name, value, content type), as the frontend sends them
    headers: dict = field(default_factory=dict)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four byte-level mutations: flip, insert, delete, truncate, duplicate a run, set an int field."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        pos = rng.randrange(len(out) + 1) if out else 0
        if kind == 0 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 2 and out:
            del out[pos:pos + rng.randint(1, 16)]
        elif kind == 3:
            del out[pos:]
        elif kind == 4 and out:
            run = out[pos:pos + rng.randint(1, 64)]
            out[pos:pos] = run * rng.randint(1, 50)
        elif kind == 5 and len(out) >= 4:
            at = rng.randrange(len(out) - 3)
            out[at:at + 4] = struct.pack("<I", rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32))))
        else:
            out[pos:pos] = rng.choice((b"\x00", b"\xff", b"\"", b"[", b"{", b"\\ud800", b"1e999", b"-", b"NaN"))
    return bytes(out)


def random_json(rng: random.Random, depth: int = 0):
    """A random JSON value: hostile strings, huge and non-finite numbers, odd nesting."""
    choice = rng.randrange(10 if depth < 4 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice((True, False))
    if choice == 2:
        return rng.choice((0, -1, 2 ** 63, 10 ** 30, -(10 ** 400), 1.5, 1e308, float("nan"), float("inf")))
    if choice == 3:
        return rng.choice(("", "é" * rng.randint(1, 300), "\ud800", "FP32", "BYTES", "data", "input", "a" * 5000))
    if choice == 4:
        return [rng.random() for _ in range(rng.randint(0, 70))]
    if choice == 5:
        return rng.choice(([], {}, [[]], [{}]))
    if choice in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ("data", "inputs", "outputs", "id", "name", "shape", "datatype", "parameters", "text",
            "binary_data_size", "binary_data", "binary_data_output", "x" * rng.randint(1, 40))
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate_json(document, rng: random.Random):
    """Replace one value somewhere in a parsed document by a random one."""
    if isinstance(document, dict) and document and rng.random() < 0.8:
        key = rng.choice(list(document))
        return {**document, key: mutate_json(document[key], rng)}
    if isinstance(document, list) and document and rng.random() < 0.8:
        at = rng.randrange(len(document))
        return document[:at] + [mutate_json(document[at], rng)] + document[at + 1:]
    return random_json(rng)


def json_bytes(document) -> bytes:
    """JSON text; NaN/Infinity are written as Python does (clients send them too)."""
    return json.dumps(document).encode("utf-8", "surrogatepass")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool = True) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def npy_header_mutants(rng: random.Random) -> bytes:
    """A hand-written .npy header with a hostile descr, shape or version."""
    descr = rng.choice(("<f4", "|S0", "<U0", "|V0", "<f3", "|O", "<c8", ">f8", "|b1", "<M8[s]", "<i8", "|u1"))
    shape = rng.choice(("(8,)", "(4294967296, 4294967296)", "(100000000000000000000,)", "(" + "9" * 5000 + ",)",
                        "(0,)", "()", "(1, 8)", "(-1,)", "(2**31,)"))
    header = f"{{'descr': '{descr}', 'fortran_order': {rng.choice(('False', 'True'))}, 'shape': {shape}, }}"
    version = rng.choice((1, 2, 3, 9))
    raw = header.encode("latin1")
    length = struct.pack("<H", len(raw)) if version == 1 else struct.pack("<I", len(raw))
    tail = bytes(rng.randrange(256) for _ in range(rng.choice((0, 4, 32))))
    return b"\x93NUMPY" + bytes([version, 0]) + length + raw + tail


def zip_with_lying_sizes(member: bytes, claimed: int) -> bytes:
    """A one-member deflated zip whose directory claims ``claimed`` bytes for the member."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("input.npy", member)
    data = bytearray(buffer.getvalue())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        data[at + offset:at + offset + 4] = struct.pack("<I", claimed)
    return bytes(data)


def v2_binary(document: dict, binary: bytes) -> tuple[bytes, dict]:
    header = json_bytes(document)
    return header + binary, {HEADER_LENGTH: str(len(header))}


def _one(label: str, body, content_type: str, headers: dict | None = None) -> FuzzBody:
    return FuzzBody(label, (("body", body, content_type),), headers or {})


def tensor_bodies(name: str, instance: np.ndarray, rng: random.Random, count: int) -> list[FuzzBody]:
    """Fuzz bodies for a one-input tensor model whose instances look like ``instance`` (float32)."""
    good_json = {"data": instance.tolist()}
    good_v2 = {"id": "r", "inputs": [{"name": name, "shape": [1, *instance.shape], "datatype": "FP32",
                                      "data": instance.ravel().tolist()}]}
    raw = np.ascontiguousarray(instance[np.newaxis], "<f4").tobytes()
    good_v2_bin = {"inputs": [{"name": name, "shape": [1, *instance.shape], "datatype": "FP32",
                               "parameters": {"binary_data_size": len(raw)}}]}
    lies = ("1_0_7", "-5", "0", "99999999999999999999", " 12", "x", "\u0663", "+12")
    makers = [
        lambda: _one("random bytes", bytes(rng.randrange(256) for _ in range(rng.randint(0, 512))),
                     rng.choice(("", OCTET, JSON, NPY, NPZ, "text/plain"))),
        lambda: _one("json mutated bytes", mutate(json_bytes(good_json), rng), JSON),
        lambda: _one("json mutated value", json_bytes(mutate_json(good_json, rng)), JSON),
        lambda: _one("json random document", json_bytes(random_json(rng)), JSON),
        lambda: _one("npy mutated", mutate(npy_bytes(instance[np.newaxis]), rng), NPY),
        lambda: _one("npy hostile header", npy_header_mutants(rng), NPY),
        lambda: _one("npz mutated", mutate(npz_bytes({name: instance[np.newaxis]}), rng), NPZ),
        lambda: _one("npz lying sizes", zip_with_lying_sizes(npy_bytes(np.zeros((4096, *instance.shape), np.float32)),
                                                            rng.choice((384, 0, 2 ** 32 - 1))), NPZ),
        lambda: _one("v2 mutated value", json_bytes(mutate_json(good_v2, rng)), JSON),
        lambda: _one("v2 mutated bytes", mutate(json_bytes(good_v2), rng), JSON),
        lambda: _one("v2 binary mutated header", *v2_binary(mutate_json(good_v2_bin, rng), raw)[:1], OCTET,
                     v2_binary(good_v2_bin, raw)[1]),
        lambda: _one("v2 binary mutated", mutate(v2_binary(good_v2_bin, raw)[0], rng), OCTET, v2_binary(good_v2_bin, raw)[1]),
        lambda: _one("v2 binary length lies", v2_binary(good_v2_bin, raw)[0], OCTET, {HEADER_LENGTH: rng.choice(lies)}),
    ]
    return [makers[idx % len(makers)]() for idx in range(count)]


def image_bytes(rng: random.Random) -> dict[str, bytes]:
    """Small real images in each accepted format (random content, random size)."""
    from PIL import Image

    side = rng.randint(1, 48), rng.randint(1, 48)
    pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (side[1], side[0], 3), np.uint8)
    out = {}
    for fmt, options in (("JPEG", {"quality": 80}), ("PNG", {}), ("WEBP", {"quality": 80})):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt, **options)
        out[fmt] = buffer.getvalue()
    return out


def hostile_image(rng: random.Random) -> tuple[bytes, str]:
    """One of the image bodies that once cost seconds or raised: chunk floods, frame lies, damaged EXIF."""
    kind = rng.randrange(4)
    if kind == 0:
        return png_with_chunks(rng.choice((5000, 50_000))), "image/png"
    if kind == 1:
        return jpeg_declaring_more_rows(rng.choice((2, 4, 30)), rng.randrange(1 << 30)), "image/jpeg"
    if kind == 2:
        jpeg = jpeg_with_exif(exif_blob(rng), rng.randrange(1 << 30))
        return (mutate(jpeg, rng) if rng.random() < 0.3 else jpeg), "image/jpeg"
    return b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", OCTET


def image_bodies(name: str, rng: random.Random, count: int) -> list[FuzzBody]:
    """Fuzz bodies for a one-image model: raw, base64 JSON, v2 BYTES (JSON and binary), multipart."""
    types = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    def some_image() -> tuple[str, bytes]:
        fmt, data = rng.choice(list(image_bytes(rng).items()))
        return fmt, data

    def mutated_image() -> tuple[str, bytes]:
        fmt, data = some_image()
        return fmt, mutate(data, rng)

    def v2_bytes(elements: list[bytes]) -> bytes:
        return b"".join(struct.pack("<I", len(e)) + e for e in elements)

    makers = [
        lambda: _one("image mutated raw", mutated_image()[1], rng.choice(list(types.values()) + [OCTET, ""])),
        lambda: _one("image random bytes", bytes(rng.randrange(256) for _ in range(rng.randint(0, 256))),
                     rng.choice(list(types.values()) + [OCTET])),
        lambda: _one("image json base64 mutated", json_bytes({"data": [b64(mutated_image()[1])
                                                                      for _ in range(rng.randint(1, 3))]}), JSON),
        lambda: _one("image json mutated value", json_bytes(mutate_json({"data": [b64(some_image()[1])]}, rng)), JSON),
        lambda: _one("image json base64 junk", json_bytes({"data": rng.choice(("@@", "aGk=\n", "==", "a" * 4097,
                                                                                 "data:image/png;base64,!!"))}), JSON),
        lambda: _one("image v2 mutated", json_bytes(mutate_json({"inputs": [{"name": name, "shape": [1], "datatype": "BYTES",
                                                                              "data": [b64(some_image()[1])]}]}, rng)), JSON),
        lambda: (lambda elements: _one("image v2 binary mutated", *(lambda body, headers: (mutate(body, rng), OCTET, headers))(
            *v2_binary({"inputs": [{"name": name, "shape": [len(elements)], "datatype": "BYTES",
                                    "parameters": {"binary_data_size": len(v2_bytes(elements))}}]}, v2_bytes(elements)))))(
            [some_image()[1] for _ in range(rng.randint(1, 3))]),
        lambda: FuzzBody("image multipart mutated", tuple(
            (rng.choice(("file", "file", "image", "x" * 300)), mutated_image()[1] if rng.random() < 0.5 else some_image()[1],
             rng.choice(list(types.values()) + [OCTET])) for _ in range(rng.randint(1, 4)))),
        lambda: _one("image hostile structure", *hostile_image(rng)),
        lambda: FuzzBody("image multipart text field", (("file", rng.choice(("", "@@", b64(some_image()[1]))).encode(),
                                                          "text/plain"), ("file", some_image()[1], "image/png"))),
    ]
    return [makers[idx % len(makers)]() for idx in range(count)]


def text_bodies(rng: random.Random, count: int) -> list[FuzzBody]:
    """Fuzz bodies for a model that takes text: JSON texts and text/plain, hostile strings."""
    def hostile_text() -> str:
        pieces = ["rain", " ", "é", "\ud800", "\x00", "\u202e", "🙂", "\n", "[CLS]", "goal", "\ufeff", "a" * 200]
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))

    makers = [
        lambda: _one("text json", json_bytes({"text": hostile_text()}), JSON),
        lambda: _one("text json list", json_bytes({"text": [hostile_text() for _ in range(rng.randint(0, 5))]}), JSON),
        lambda: _one("text json mutated", json_bytes(mutate_json({"text": ["rain", "goal"]}, rng)), JSON),
        lambda: _one("text plain bytes", mutate(hostile_text().encode("utf-8", "surrogatepass"), rng), "text/plain"),
        lambda: _one("text plain random", bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))),
                     "text/plain; charset=utf-8"),
        lambda: _one("text json mutated bytes", mutate(json_bytes({"text": "the match"}), rng), JSON),
    ]
    return [makers[idx % len(makers)]() for idx in range(count)]
