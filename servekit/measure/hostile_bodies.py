"""Hostile request bodies found in the issue-20 review: each once cost a worker seconds, gigabytes, its
batch (an exception outside any request) or a wrong 200. Built here once for the bad-input matrix
(``servekit reliability``) and the tests."""
from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np

# EXIF blocks found by fuzzing that make Pillow 13 raise while applying the orientation (TypeError: bytes where
# a rational belongs; struct.error: an offset out of range; AttributeError: a rational where text belongs).
DAMAGED_EXIF = {
    "TypeError": "45786966000049492a000800000002001201030001000000080000001a01070001000000b79ab60c00000000",
    "struct.error": "45786966000049492a000800000004001201030001000000030000001201070002000000a28333392588050000000000"
                    "080000001a010900010000000a5749b308000000",
    "AttributeError": "45786966000049492a000800000006001201030001000000060000001a01090001000000080000000f0102000000"
                      "0000000000000f010500010000000800000012010c00000000001a00000012010600020000001a00000008000000",
}


def npy_raw(header: str, version: int = 1, data: bytes = b"") -> bytes:
    """An .npy body with a hand-written header, as a hostile client writes one."""
    raw = header.encode("latin1")
    length = struct.pack("<H", len(raw)) if version == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes([version, 0]) + length + raw + data


def npy_header(descr: str, shape: str) -> bytes:
    """A version-1 .npy header for ``descr`` and ``shape`` (the tuple's text) with no data after it."""
    return npy_raw(f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")


def lying_npz(inflated: int, claimed: int = 384) -> bytes:
    """An .npz whose one member inflates to ``inflated`` bytes while its zip directory claims ``claimed``.

    zipfile's whole-member read inflated up to 2 GiB before cutting to the claim (RSS 343 -> 2,375 MB).
    """
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (inflated // 4,)})
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts, crc = [compressor.compress(header.getvalue())], zlib.crc32(header.getvalue())
    block = b"\0" * (1 << 20)
    for _ in range(inflated // len(block)):
        parts.append(compressor.compress(block))
        crc = zlib.crc32(block, crc)
    stream = b"".join(parts) + compressor.flush()
    name = b"input.npy"
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), claimed, len(name), 0) + name
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(stream), claimed,
                          len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(stream), 0)
    return local + stream + central + end


def small_image(fmt: str, size: tuple[int, int] = (64, 48), seed: int = 0, **options) -> bytes:
    """A random-content image of ``size`` (width, height) in ``fmt``."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 85} if fmt == "JPEG" else {}) | options)
    return buffer.getvalue()


def png_with_chunks(count: int) -> bytes:
    """A valid 8x8 PNG with ``count`` empty ancillary chunks before its image data (Pillow walks each in Python:
    400,000 of them cost 2-4 s per image)."""
    png = small_image("PNG", (8, 8))
    chunk = struct.pack(">I", 0) + b"zzZz" + struct.pack(">I", zlib.crc32(b"zzZz"))
    return png[:33] + chunk * count + png[33:]  # after the signature (8) and IHDR (25)


def jpeg_with_segments(count: int) -> bytes:
    """A valid small JPEG with ``count`` empty comment segments before its frame."""
    jpeg = small_image("JPEG", (8, 8))
    return jpeg[:2] + b"\xff\xfe\x00\x02" * count + jpeg[2:]


def jpeg_declaring_more_rows(factor: int, seed: int = 0) -> bytes:
    """A real baseline JPEG whose frame header claims ``factor`` times its height (libjpeg fills the rows its
    data lacks with grey, and Pillow answered with a class)."""
    data = bytearray(small_image("JPEG", (64, 48), seed))
    at = data.find(b"\xff\xc0")
    height = struct.unpack(">H", data[at + 5:at + 7])[0]
    data[at + 5:at + 7] = struct.pack(">H", min(65535, height * factor))
    return bytes(data)


def jpeg_with_exif(blob: bytes, seed: int = 0) -> bytes:
    """A small JPEG carrying ``blob`` as its EXIF segment."""
    return small_image("JPEG", (30, 20), seed, exif=blob)


def lossless_webp(side: int) -> bytes:
    """A one-colour lossless WebP of side x side pixels: a few hundred bytes that decode to side^2 x 3."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (10, 200, 30)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


def exif_blob(rng: random.Random) -> bytes:
    """An EXIF block: an orientation and a few entries of random tag, type, count and value (for fuzzing)."""
    entries = [(0x0112, 3, 1, struct.pack("<HH", rng.choice((6, 8, 3, 0, 9, 65535)), 0))]
    for _ in range(rng.randint(0, 6)):
        entries.append((rng.choice((0x0112, 0x8769, 0x8825, 0x010F, 0x011A, 0x0132, rng.randrange(65536))),
                        rng.randrange(0, 14), rng.choice((0, 1, 2, 0x7FFFFFFF, rng.randrange(1 << 32))),
                        struct.pack("<I", rng.choice((0, 8, 26, 10 ** 6, rng.randrange(1 << 32))))))
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", t, k, c) + v for t, k, c, v in entries)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", rng.choice((0, 8, 99999)))
