"""The tiny image classifier (servekit.examples.vision, exported through `servekit export --image-*` as a user
would) and real photographs (scikit-learn's samples) in every format and flaw a client may send."""
from __future__ import annotations

import io

import numpy as np

from servekit.build.images import encode, sample_photos
from servekit.examples.vision import TINY_MAX_PIXELS, TINY_NAME, export_tiny_vision, tiny_vision  # noqa: F401 (re-exported)

NAME = TINY_NAME
MAX_PIXELS = TINY_MAX_PIXELS


def photos() -> dict[str, bytes]:
    """Real photographs, encoded the ways clients send them, including the ones we must convert."""
    from PIL import Image

    china, flower = sample_photos()
    rotated = io.BytesIO()  # stored sideways with EXIF orientation 6 ("rotate 90 clockwise to view")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(flower))).save(rotated, "JPEG", quality=90, exif=exif)
    rgba = np.concatenate([china, np.full((*china.shape[:2], 1), 200, np.uint8)], axis=2)
    return {
        "jpeg": encode(china), "png": encode(flower, "PNG"), "webp": encode(china, "WEBP", quality=90),
        "grey": encode(china.mean(axis=2).astype(np.uint8)), "rgba png": encode(rgba, "PNG"),
        "cmyk jpeg": _cmyk(flower), "exif rotated": rotated.getvalue(), "progressive": encode(flower, progressive=True),
    }


def _cmyk(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("CMYK").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels (900 MP by default): only the header is real."""
    from servekit.measure.bad_inputs import png_declaring

    return png_declaring(width, height)
