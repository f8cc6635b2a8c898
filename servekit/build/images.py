"""Build-time side of image inputs: the export options, real photographs (shipped with scikit-learn),
and the in-process preprocessing, which is the handler's own (``handlers.image``), so served answers
equal in-process ones."""
from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from handlers.image import DEFAULT_MAX_PIXELS, DEFAULT_SCALE, LAYOUTS, MODES, ImagePreprocess
from handlers.signature import InputSpec, Signature
from handlers.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
PHOTO_SEED = 0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """``servekit export`` options that make the (only) input an image with declared preprocessing."""
    group = parser.add_argument_group("image input (requests send JPEG/PNG/WebP; any of these makes the input an image)")
    group.add_argument("--image", action="store_true", help="the input is an image (defaults for the rest)")
    group.add_argument("--image-resize", type=int, metavar="PIXELS", help="shorter side after resizing (default: crop)")
    group.add_argument("--image-crop", type=int, metavar="PIXELS",
                       help="centre crop; must equal the input's spatial shape (checked)")
    group.add_argument("--image-mean", metavar="M[,M,M]", help="per-channel mean after scaling, e.g. 0.485,0.456,0.406")
    group.add_argument("--image-std", metavar="S[,S,S]", help="per-channel std after scaling, e.g. 0.229,0.224,0.225")
    group.add_argument("--image-scale", type=float, help=f"pixel multiplier before mean/std (default 1/255 = {DEFAULT_SCALE:.6g})")
    group.add_argument("--image-mode", choices=sorted(MODES), help="colour mode the model takes (default RGB)")
    group.add_argument("--image-layout", choices=LAYOUTS, help="CHW (PyTorch, default) or HWC")
    group.add_argument("--image-max-pixels", type=int, metavar="N",
                       help=f"refuse larger images with 413 before decoding (default {DEFAULT_MAX_PIXELS:,})")
    group.add_argument("--no-exif", action="store_true", help="ignore the EXIF orientation (default: apply it)")


def wants_image(args: argparse.Namespace) -> bool:
    """Whether any image option was given."""
    return bool(args.image or args.no_exif or any(getattr(args, name) is not None for name in (
        "image_resize", "image_crop", "image_mean", "image_std", "image_scale", "image_mode", "image_layout",
        "image_max_pixels")))


def image_signature(signature: Signature, args: argparse.Namespace) -> Signature:
    """The signature with its one input declared an image, preprocessed as the options say."""
    if signature.single is None:
        raise ConfigError(f"image options need a model with one input; it has {list(signature.names)}")
    spec = signature.single
    raw: dict = {"exif": not args.no_exif}
    for key, value in (("resize", args.image_resize), ("crop", args.image_crop), ("scale", args.image_scale),
                       ("mode", args.image_mode), ("layout", args.image_layout), ("max_pixels", args.image_max_pixels),
                       ("mean", _floats(args.image_mean, "--image-mean")), ("std", _floats(args.image_std, "--image-std"))):
        if value is not None:
            raw[key] = value
    shape = spec.fixed_shape()
    preprocess = ImagePreprocess.from_dict(raw, shape)
    image_spec = InputSpec(spec.name, spec.shape, "float32", image=preprocess)
    return Signature((image_spec,), signature.outputs)


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} {text!r} must be comma-separated numbers") from None


def preprocess(images: Sequence[bytes], preprocess_: ImagePreprocess) -> np.ndarray:
    """Encoded images -> the model's float32 batch, exactly as the handler does it (a copy, not its buffer)."""
    pixels = [preprocess_.decode_many([data], f"image {idx}") for idx, data in enumerate(images)]
    return preprocess_.to_model(pixels).copy()


def image_files(directory: Path) -> list[Path]:
    """The JPEG/PNG/WebP files of a directory, sorted by name."""
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{directory} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    return files


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's two sample photographs (China, a flower), 427x640 RGB uint8; shipped, not downloaded."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def encode(pixels: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    """uint8 HxWxC (or HxW) -> encoded image bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}) | options)
    return buffer.getvalue()


def photo_crops(count: int, seed: int = PHOTO_SEED, min_side: int = 96) -> list[bytes]:
    """``count`` JPEGs cut from the sample photos at random places, sizes and aspect ratios (real content)."""
    rng = np.random.default_rng(seed)
    photos = sample_photos()
    crops = []
    for idx in range(count):
        photo = photos[idx % len(photos)]
        height = int(rng.integers(min_side, photo.shape[0] + 1))
        width = int(rng.integers(min_side, photo.shape[1] + 1))
        top = int(rng.integers(0, photo.shape[0] - height + 1))
        left = int(rng.integers(0, photo.shape[1] - width + 1))
        crops.append(encode(np.ascontiguousarray(photo[top:top + height, left:left + width])))
    return crops


def heldout_images(path: Path | None, signature: Signature, count: int = 64) -> dict[str, np.ndarray]:
    """Held-out inputs of an image model: a directory of image files, or crops of the sample photos."""
    (name, preprocess_), = signature.images.items()
    images = [p.read_bytes() for p in image_files(path)] if path is not None else photo_crops(count)
    return {name: preprocess(images, preprocess_)}
