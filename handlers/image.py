"""An image input's declared preprocessing, and the decode that applies it: bytes -> the model's pixels.

One ``ImagePreprocess`` per image input, read from model-config.yaml (``image:`` under the input).
Served requests and servekit's in-process checks call the same ``decode`` and ``to_model``, so served
answers equal in-process ones. Per image: sniff the format from its bytes, read only the header,
refuse more pixels than allowed (before anything is decoded), let the JPEG decoder scale down by
1/2, 1/4 or 1/8 while decoding when the target is that much smaller (draft mode), apply the EXIF
orientation, convert to the declared colour mode, and resize the centre crop straight to the
model's size. Per batch: one reused buffer, scale/mean/std applied to the whole batch at once.

Pillow is imported where an image is decoded, so models without image inputs never load it.
"""
from __future__ import annotations

import io
import re
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from handlers.errors import (BatchBudgetSpent, ConfigError, MalformedRequest, TooManyPixels, UnsupportedMediaType,
                             quoted)
from handlers.image_checks import check_png, sequential_jpeg_without_eoi

ACCEPTED = ("JPEG", "PNG", "WEBP")
IMAGE_CONTENT_TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG", "image/png": "PNG",
                       "image/webp": "WEBP"}
MODES = {"RGB": 3, "L": 1}
LAYOUTS = ("CHW", "HWC")
FITS = ("crop", "stretch")  # shorter side to ``resize`` then the centre crop, or the whole image to the crop's size
RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")  # Pillow's filters
DEFAULT_MAX_PIXELS = 40_000_000  # a 12 MP phone photo passes; Pillow's own bomb limit is 89 MP
# Decoding costs memory and time per decoded pixel (a JPEG's are fewer: it decodes at 1/2..1/8 scale when the
# model is that much smaller). One image may hold max_pixels; all images of one request together decode to at
# most max_request_pixels (default: max_pixels), all images of one batch to max_batch_pixels (default: twice
# that). Measured on 2 cores: one lossless 6300x6300 WebP (39.7 MP) decodes in about 1 s and 119 MB.
BATCH_BUDGET_IN_REQUESTS = 2  # a batch decodes at most two full requests' worth of pixels by default
DEFAULT_SCALE = 1.0 / 255.0
# Magic bytes of formats we recognise but do not accept (answered 415, not 400 "corrupt").
OTHER_FORMATS = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
                 (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"), (b"\xff\x0a", "JPEG XL"),
                 (b"\x00\x00\x00\x0cJXL ", "JPEG XL"), (b"%PDF", "PDF"))
SNIFF_TEXT_BYTES = 512  # an SVG's <svg tag comes after its XML declaration and comments
TEXT_FORMATS = re.compile(rb"\s*<(\?xml|svg|!doctype svg|!doctype html|html)", re.IGNORECASE)  # sniffed to name them
# What Pillow raises on damaged EXIF while rotating (found by fuzzing: bytes where a rational belongs, an
# offset past the block, a negative seek).
EXIF_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, struct.error, OSError,
               SyntaxError)


def sniff_format(data: bytes | bytearray | memoryview) -> str | None:
    """The image format from its first bytes (JPEG, PNG, WEBP, or one we refuse), or None."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"msf1"):
        return head[8:12].decode().upper()
    known = next((name for magic, name in OTHER_FORMATS if head.startswith(magic)), None)
    if known is None and (found := TEXT_FORMATS.match(bytes(data[:64]))):
        tag = found[1].lower()
        known = ("SVG" if b"svg" in tag or b"<svg" in bytes(data[:SNIFF_TEXT_BYTES]).lower()
                 else "HTML" if b"html" in tag else "XML")
    return known


@dataclass(frozen=True)
class ImagePreprocess:
    """How one image input turns bytes into the model's tensor.

    ``resize``: the shorter side after resizing (default: the crop, i.e. fill the crop); ``crop``: the
    centre crop ``(height, width)``, equal to the input's spatial shape. Then ``(pixel * scale - mean) / std``
    per channel, in ``layout``.
    """

    crop: tuple[int, int]
    resize: int | None = None
    mode: str = "RGB"
    scale: float = DEFAULT_SCALE
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    layout: str = "CHW"
    exif: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    fit: str = "crop"
    resample: str = "bilinear"
    # exact: decode every pixel, resize the whole image, then crop, as transformers' image processors do (their
    # output to 1e-7); else the fast path: JPEG draft decoding and one resize of the crop's box.
    exact: bool = False
    max_request_pixels: int | None = None  # decoded pixels of one request's images (default: max_pixels)
    max_batch_pixels: int | None = None  # decoded pixels of one batch's images (default: 2 x max_request_pixels)
    _buffers: dict = field(default_factory=dict, compare=False, repr=False)  # one reused batch buffer

    def __post_init__(self) -> None:
        crop = (self.crop, self.crop) if isinstance(self.crop, int) else tuple(int(c) for c in self.crop)
        object.__setattr__(self, "crop", crop)
        if self.mode not in MODES:
            raise ConfigError(f"image mode {self.mode!r} must be one of {sorted(MODES)}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"image layout {self.layout!r} must be one of {LAYOUTS}")
        if len(crop) != 2 or min(crop) < 1:
            raise ConfigError(f"image crop must be a size or (height, width) >= 1, got {self.crop!r}")
        if self.resize is not None and self.resize < max(crop):
            raise ConfigError(f"image resize {self.resize} is smaller than the crop {list(crop)}: the crop would "
                              "run off the image")
        channels = MODES[self.mode]
        for name, default in (("mean", 0.0), ("std", 1.0)):
            values = tuple(float(v) for v in getattr(self, name)) or (default,) * channels
            if len(values) == 1:
                values *= channels
            if len(values) != channels:
                raise ConfigError(f"image {name} needs {channels} values for mode {self.mode}, got {list(values)}")
            object.__setattr__(self, name, values)
        if self.fit not in FITS or self.resample not in RESAMPLE:
            raise ConfigError(f"image fit must be one of {FITS} and resample one of {RESAMPLE}; got {self.fit!r}, "
                              f"{self.resample!r}")
        if any(s == 0 for s in self.std) or self.scale <= 0 or self.max_pixels < 1:
            raise ConfigError("image std must be non-zero, scale > 0 and max_pixels >= 1")
        if self.max_request_pixels is None:
            object.__setattr__(self, "max_request_pixels", self.max_pixels)
        if self.max_batch_pixels is None:
            object.__setattr__(self, "max_batch_pixels", BATCH_BUDGET_IN_REQUESTS * self.max_request_pixels)
        if not 1 <= self.max_request_pixels <= self.max_batch_pixels:
            raise ConfigError(f"image pixel budgets need 1 <= max_request_pixels ({self.max_request_pixels:,}) <= "
                              f"max_batch_pixels ({self.max_batch_pixels:,})")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], shape: Sequence[int]) -> ImagePreprocess:
        """From an input's ``image:`` mapping; the crop defaults to the input's spatial ``shape``."""
        known = {"mode", "resize", "crop", "scale", "mean", "std", "layout", "exif", "max_pixels", "fit", "resample", "exact",
                 "max_request_pixels", "max_batch_pixels"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"image settings {unknown} are unknown; known: {sorted(known)}")
        layout = str(raw.get("layout", "CHW"))
        spatial = tuple(shape[1:] if layout == "CHW" else shape[:2])
        crop = raw.get("crop", spatial)
        preprocess = cls(crop=crop, resize=None if raw.get("resize") is None else int(raw["resize"]),
                         mode=str(raw.get("mode", "RGB")), scale=float(raw.get("scale", DEFAULT_SCALE)),
                         mean=tuple(raw.get("mean", ())), std=tuple(raw.get("std", ())), layout=layout,
                         exif=bool(raw.get("exif", True)), max_pixels=int(raw.get("max_pixels", DEFAULT_MAX_PIXELS)),
                         fit=str(raw.get("fit", "crop")), resample=str(raw.get("resample", "bilinear")),
                         exact=bool(raw.get("exact", False)),
                         max_request_pixels=_optional_int(raw.get("max_request_pixels")),
                         max_batch_pixels=_optional_int(raw.get("max_batch_pixels")))
        preprocess.check_shape(shape)
        return preprocess

    def to_dict(self) -> dict[str, Any]:
        """The ``image:`` mapping written into model-config.yaml (every setting spelled out)."""
        return {"mode": self.mode, "resize": self.resize or max(self.crop), "crop": list(self.crop),
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std), "layout": self.layout,
                "exif": self.exif, "max_pixels": self.max_pixels, "fit": self.fit, "resample": self.resample,
                "exact": self.exact, "max_request_pixels": self.max_request_pixels,
                "max_batch_pixels": self.max_batch_pixels}

    @property
    def channels(self) -> int:
        """1 for L, 3 for RGB."""
        return MODES[self.mode]

    @property
    def pixels_shape(self) -> tuple[int, int, int]:
        """One decoded image: ``(height, width, channels)`` uint8."""
        return (*self.crop, self.channels)

    def model_shape(self) -> tuple[int, int, int]:
        """One image as the model takes it, in its layout."""
        height, width = self.crop
        return (self.channels, height, width) if self.layout == "CHW" else (height, width, self.channels)

    def check_shape(self, shape: Sequence[int]) -> None:
        """The input's declared per-instance shape must be what this preprocessing produces."""
        if tuple(shape) != self.model_shape():
            raise ConfigError(f"image input shape {list(shape)} disagrees with its preprocessing: mode {self.mode}, "
                              f"crop {list(self.crop)} and layout {self.layout} give {list(self.model_shape())}")

    def decode(self, data: bytes | bytearray | memoryview, what: str = "image") -> np.ndarray:
        """One encoded image -> uint8 ``(height, width, channels)``; 400 corrupt, 413 too many pixels, 415 format."""
        return self.finish(self.open(data, what))

    def open(self, data: bytes | bytearray | memoryview, what: str = "image") -> OpenedImage:
        """Read the header only: format, bounded metadata, declared size against max_pixels, the size it will
        decode to (JPEG draft scaling applied). Nothing is decoded yet."""
        from PIL import Image, UnidentifiedImageError

        fmt = sniff_format(data)
        if fmt is None:
            raise MalformedRequest(f"{what} is not a JPEG, PNG or WebP image (its first bytes match no image format)")
        if fmt not in ACCEPTED:
            raise UnsupportedMediaType(f"{what} is {fmt}; this model accepts JPEG, PNG or WebP")
        standin = None
        if fmt == "PNG":
            check_png(data, what)
        elif fmt == "JPEG":
            standin = sequential_jpeg_without_eoi(data, what)
        try:
            image = Image.open(io.BytesIO(standin or data), formats=(fmt,))  # reads the header only
        except Image.DecompressionBombError as err:
            raise TooManyPixels(f"{what} is a decompression bomb: {err}") from None
        except UnidentifiedImageError:  # its message shows the BytesIO's memory address
            raise MalformedRequest(f"{what} is a damaged {fmt}: its header cannot be read") from None
        except (OSError, SyntaxError, ValueError, struct.error) as err:
            raise MalformedRequest(f"{what} is a damaged or truncated {fmt}: {quoted(str(err), 200)}") from None
        width, height = image.size
        if width < 1 or height < 1:
            raise MalformedRequest(f"{what} is {width}x{height} pixels: there is nothing to decode")
        if width * height > self.max_pixels:
            raise TooManyPixels(f"{what} has {width}x{height} = {width * height:,} pixels; this model accepts at "
                                f"most {self.max_pixels:,} (refused before decoding)")
        if fmt == "JPEG" and not self.exact:
            # DCT scaling: decode at 1/2, 1/4 or 1/8 while both sides stay >= the target (shorter side).
            image.draft(self.mode, (self.target, self.target))
        return OpenedImage(image, fmt, what, standin is not None)

    @property
    def target(self) -> int:
        """The shorter side an image is resized to before the centre crop."""
        return self.resize or max(self.crop)

    def finish(self, opened: OpenedImage) -> np.ndarray:
        """Decode an opened image, apply its EXIF orientation, convert, resize and crop."""
        from PIL import ImageOps

        image, fmt, what = opened.image, opened.fmt, opened.what
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, struct.error) as err:
            if opened.sequential_jpeg and "truncated" in str(err):
                raise MalformedRequest(f"{what} is a JPEG whose scan data ends before the {image.size[0]}x"
                                       f"{image.size[1]} frame its header declares (truncated, or a lying header)"
                                       ) from None
            raise MalformedRequest(f"{what} is a damaged or truncated {fmt}: {quoted(str(err), 200)}") from None
        if self.exif:
            try:
                image = ImageOps.exif_transpose(image)
            except EXIF_ERRORS as err:
                raise MalformedRequest(f"{what} has damaged EXIF metadata ({type(err).__name__}: "
                                       f"{quoted(str(err), 120)}); send it without EXIF or re-save it") from None
        image = _converted(image, self.mode)
        if self.fit == "stretch":
            return np.asarray(image.resize((self.crop[1], self.crop[0]), self._filter()))
        if self.exact:
            return np.asarray(self._resized_then_cropped(image, self.target))
        return np.asarray(self._resized_crop(image, self.target))

    def _filter(self) -> Any:
        from PIL import Image

        return getattr(Image.Resampling, self.resample.upper())

    def _resized_then_cropped(self, image: Any, target: int) -> Any:
        """The shorter side resized to ``target`` (the longer one truncated to int), then the centre crop: the steps
        and roundings of transformers' ``resize`` + ``center_crop``."""
        width, height = image.size
        if width <= height:
            size = (target, int(target * height / width))
        else:
            size = (int(target * width / height), target)
        resized = image.resize(size, self._filter())
        crop_h, crop_w = self.crop
        top, left = (size[1] - crop_h) // 2, (size[0] - crop_w) // 2
        return resized.crop((left, top, left + crop_w, top + crop_h))

    def _resized_crop(self, image: Any, target: int) -> Any:
        """Resize the shorter side to ``target`` and take the centre crop, in one resize of the crop's box."""
        width, height = image.size
        factor = target / min(width, height)
        crop_h, crop_w = self.crop
        box_w, box_h = min(width, crop_w / factor), min(height, crop_h / factor)  # min: float rounding
        left, top = max(0.0, (width - box_w) / 2), max(0.0, (height - box_h) / 2)
        return image.resize((crop_w, crop_h), self._filter(), box=(left, top, left + box_w, top + box_h))

    def decode_many(self, images: Sequence[bytes | bytearray | memoryview], what: str = "image",
                    budget: PixelBudget | None = None) -> np.ndarray:
        """Several encoded images of one request -> uint8 ``(n, height, width, channels)``.

        Every header is read first: the request's decoded pixels are checked against max_request_pixels and
        taken from the batch's ``budget`` before any image is decoded.
        """
        if not images:
            raise MalformedRequest(f"the request holds no {what}s")
        opened = [self.open(data, what if len(images) == 1 else f"{what} {idx}") for idx, data in enumerate(images)]
        pixels = sum(o.decoded_pixels for o in opened)
        if pixels > self.max_request_pixels:
            raise TooManyPixels(f"the request's {len(images)} {what}(s) decode to {pixels:,} pixels; this model "
                                f"decodes at most {self.max_request_pixels:,} per request (refused before decoding)")
        if budget is not None:
            budget.take(pixels)
        out = np.empty((len(images), *self.pixels_shape), np.uint8)
        for idx, image in enumerate(opened):
            decoded = self.finish(image)
            out[idx] = decoded if decoded.ndim == 3 else decoded[..., np.newaxis]
        return out

    def to_model(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """Requests' uint8 ``(n, h, w, c)`` -> one float32 batch in the model's layout, normalised at once.

        Writes into one buffer kept for the largest batch seen, so a served batch allocates nothing; the
        result is valid until the next call (the pipeline runs one batch at a time).
        """
        count = sum(p.shape[0] for p in pixels)
        buffer = self._buffers.get("batch")
        if buffer is None or buffer.shape[0] < count:
            buffer = self._buffers["batch"] = np.empty((count, *self.model_shape()), np.float32)
        out = buffer[:count]
        gain = np.asarray([self.scale / s for s in self.std], np.float32)
        offset = np.asarray([-m / s for m, s in zip(self.mean, self.std)], np.float32)
        if self.layout == "CHW":
            gain, offset = gain[:, None, None], offset[:, None, None]
        start = 0
        for block in pixels:
            stop = start + block.shape[0]
            source = block.transpose(0, 3, 1, 2) if self.layout == "CHW" else block
            np.multiply(source, gain, out=out[start:stop], casting="unsafe")
            start = stop
        out += offset
        return out


@dataclass(frozen=True)
class OpenedImage:
    """An image whose header was read (``ImagePreprocess.open``) and that is not decoded yet."""

    image: Any  # PIL.Image.Image
    fmt: str
    what: str
    sequential_jpeg: bool = False  # decoded from its scan with a stand-in for the EOI (frame/data check)

    @property
    def decoded_pixels(self) -> int:
        """Pixels the decode will produce (a JPEG's after draft scaling)."""
        width, height = self.image.size
        return width * height


class PixelBudget:
    """The decoded pixels one batch may still spend; the decode threads take from it under a lock."""

    def __init__(self, pixels: int) -> None:
        self.left = pixels
        self._lock = threading.Lock()

    def take(self, pixels: int) -> None:
        """Spend ``pixels``, or refuse this request with 429 when the batch has too few left."""
        with self._lock:
            if pixels > self.left:
                raise BatchBudgetSpent(f"this batch has {self.left:,} image pixels left to decode; the request needs "
                                       f"{pixels:,}; retry it (other requests' images are decoding)")
            self.left -= pixels


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _converted(image: Any, mode: str) -> Any:
    """Grey, palette, CMYK, 16-bit and alpha images become ``mode``; transparency is laid on white."""
    if image.mode == mode:
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        from PIL import Image

        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        image = background
    if image.mode.startswith("I"):  # 16-bit grey: keep the top 8 bits (convert() would clip at 255)
        from PIL import Image

        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
    return image.convert(mode)
