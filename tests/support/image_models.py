"""A tiny image classifier (3x32x32 RGB -> 3 classes) exported through `servekit export --image-*` as a
user would, and real photographs (scikit-learn's samples) in every format and flaw a client may send."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from servekit.cli import main
from servekit.images import encode, sample_photos

NAME = "tiny_vision"
LABELS = ("sky", "ground", "other")
CROP, RESIZE = 32, 40
MAX_PIXELS = 1_000_000
EXPORT_OPTIONS = ("--task", "classification", "--labels", ",".join(LABELS), "--input", f"image:float32:3,{CROP},{CROP}",
                  "--image-resize", str(RESIZE), "--image-mean", "0.485,0.456,0.406", "--image-std", "0.229,0.224,0.225",
                  "--image-max-pixels", str(MAX_PIXELS))


def tiny_vision() -> nn.Module:
    """Seeded conv net; random weights are enough to prove served == in-process."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(LABELS))).eval()


def export_tiny_vision(build_dir: Path) -> Path:
    """``servekit export --factory support.image_models:tiny_vision --image-resize ...`` into build_dir/NAME."""
    status = main(["export", "--factory", "support.image_models:tiny_vision", "--name", NAME, *EXPORT_OPTIONS,
                   "--batch-size", "16", "--max-batch-delay", "20", "--build-dir", str(build_dir)])
    assert status == 0, "export of the tiny vision model failed"
    return build_dir / NAME


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
    """A tiny PNG whose header declares ``width x height`` pixels (900 MP): only the header is real."""
    small = encode(np.zeros((1, 1), np.uint8), "PNG")
    ihdr = struct.pack(">II", width, height) + small[24:29]
    chunk = b"IHDR" + ihdr
    return small[:8] + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[33:]
