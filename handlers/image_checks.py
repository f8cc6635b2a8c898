"""Cheap structural checks of an encoded image before Pillow reads it: bounded metadata (PNG chunks, JPEG
segments) and, for sequential JPEGs, scan data that really covers the frame its header declares.

Pillow walks a PNG's chunks and a JPEG's segments one by one in Python: 400,000 empty chunks in a 5 MB
body cost it seconds per image. These walks stop at a fixed count, so a hostile body costs microseconds.
"""
from __future__ import annotations

import struct

from handlers.errors import TooComplex

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_CHUNKS = 4096  # libpng writes 8 KiB IDAT chunks: a 6 MiB body holds ~770; more is not an encoder's doing
MAX_JPEG_SEGMENTS = 512  # marker segments before the first scan; cameras write tens (EXIF, ICC in <= 255 parts)
SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
SEQUENTIAL_FRAMES = (0xC0, 0xC1)  # baseline and extended Huffman-coded sequential: one complete scan at the end
STANDALONE = set(range(0xD0, 0xD8)) | {0x01, SOI}  # markers without a length field
# A sequential JPEG decoded without its EOI: a scan that covers the frame ends before the data does; a short
# one (a header lying about the frame) runs out of data instead of being padded with grey by libjpeg.
EOI_STANDIN = b"\x00" * 16


def check_png(data: bytes | bytearray | memoryview, what: str) -> None:
    """Refuse a PNG with more than MAX_PNG_CHUNKS chunks (walks the chunk headers only)."""
    view = memoryview(data)
    offset, chunks = len(PNG_SIGNATURE), 0
    while offset + 8 <= len(view):
        (length,) = struct.unpack_from(">I", view, offset)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise TooComplex(f"{what} holds more than {MAX_PNG_CHUNKS:,} PNG chunks; refused before decoding")
        if bytes(view[offset + 4:offset + 8]) == b"IEND":
            return
        offset += 12 + length


def jpeg_scan_start(data: bytes | bytearray | memoryview, what: str) -> tuple[int, int | None]:
    """Walk a JPEG's marker segments up to its first scan: (offset of the scan's data, frame marker).

    Refuses more than MAX_JPEG_SEGMENTS segments; a structure that breaks off is left to Pillow to name.
    """
    view = memoryview(data)
    offset, segments, frame = 2, 0, None
    while offset + 4 <= len(view):
        if view[offset] != 0xFF:
            return -1, frame
        marker = view[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in STANDALONE:
            offset += 2
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise TooComplex(f"{what} holds more than {MAX_JPEG_SEGMENTS} JPEG segments before its image data; "
                                "refused before decoding")
        (length,) = struct.unpack_from(">H", view, offset + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and frame is None:
            frame = marker
        if marker == SOS:
            return offset + 2 + length, frame
        offset += 2 + length
    return -1, frame


def sequential_jpeg_without_eoi(data: bytes | bytearray | memoryview, what: str) -> bytes | None:
    """For a baseline/extended sequential JPEG: its bytes up to the end of the scan, the EOI replaced by
    EOI_STANDIN; None for any other JPEG (progressive, arithmetic, several scans: decoded as sent)."""
    scan, frame = jpeg_scan_start(data, what)
    if scan < 0 or frame not in SEQUENTIAL_FRAMES:
        return None
    raw = bytes(data)
    end = raw.find(b"\xff", scan)
    while end != -1 and end + 1 < len(raw) and (raw[end + 1] == 0 or 0xD0 <= raw[end + 1] <= 0xD7):
        end = raw.find(b"\xff", end + 2)  # stuffed 0xFF00 and restart markers belong to the scan
    if end == -1 or end + 1 >= len(raw) or raw[end + 1] != EOI:
        return None  # another scan follows, or no end marker at all: nothing to compare, decode as sent
    return raw[:end] + EOI_STANDIN
