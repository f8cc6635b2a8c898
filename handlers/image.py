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
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from handlers.errors import ConfigError, MalformedRequest, TooManyPixels, UnsupportedMediaType

ACCEPTED = ("JPEG", "PNG", "WEBP")
IMAGE_CONTENT_TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG", "image/png": "PNG",
                       "image/webp": "WEBP"}
MODES = {"RGB": 3, "L": 1}
LAYOUTS = ("CHW", "HWC")
FITS = ("crop", "stretch")  # shorter side to ``resize`` then the centre crop, or the whole image to the crop's size
RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")  # Pillow's filters
DEFAULT_MAX_PIXELS = 40_000_000  # a 12 MP phone photo passes; Pillow's own bomb limit is 89 MP
DEFAULT_SCALE = 1.0 / 255.0
# Magic bytes of formats we recognise but do not accept (answered 415, not 400 "corrupt").
OTHER_FORMATS = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
                 (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"), (b"\xff\x0a", "JPEG XL"),
                 (b"\x00\x00\x00\x0cJXL ", "JPEG XL"))


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
    return next((name for magic, name in OTHER_FORMATS if head.startswith(magic)), None)


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

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], shape: Sequence[int]) -> ImagePreprocess:
        """From an input's ``image:`` mapping; the crop defaults to the input's spatial ``shape``."""
        known = {"mode", "resize", "crop", "scale", "mean", "std", "layout", "exif", "max_pixels", "fit", "resample", "exact"}
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
                         exact=bool(raw.get("exact", False)))
        preprocess.check_shape(shape)
        return preprocess

    def to_dict(self) -> dict[str, Any]:
        """The ``image:`` mapping written into model-config.yaml (every setting spelled out)."""
        return {"mode": self.mode, "resize": self.resize or max(self.crop), "crop": list(self.crop),
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std), "layout": self.layout,
                "exif": self.exif, "max_pixels": self.max_pixels, "fit": self.fit, "resample": self.resample,
                "exact": self.exact}

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
        from PIL import Image, ImageOps

        fmt = sniff_format(data)
        if fmt is None:
            raise MalformedRequest(f"{what} is not a JPEG, PNG or WebP image (its first bytes match no image format)")
        if fmt not in ACCEPTED:
            raise UnsupportedMediaType(f"{what} is {fmt}; this model accepts JPEG, PNG or WebP")
        try:
            image = Image.open(io.BytesIO(data), formats=(fmt,))  # reads the header only
        except Image.DecompressionBombError as err:
            raise TooManyPixels(f"{what} is a decompression bomb: {err}") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise MalformedRequest(f"{what} is a damaged or truncated {fmt}: {err}") from None
        width, height = image.size
        if width * height > self.max_pixels:
            raise TooManyPixels(f"{what} has {width}x{height} = {width * height:,} pixels; this model accepts at "
                                  f"most {self.max_pixels:,} (refused before decoding)")
        target = self.resize or max(self.crop)
        if fmt == "JPEG" and not self.exact:
            # DCT scaling: decode at 1/2, 1/4 or 1/8 while both sides stay >= the target (shorter side).
            image.draft(self.mode, (target, target))
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise MalformedRequest(f"{what} is a damaged or truncated {fmt}: {err}") from None
        if self.exif:
            image = ImageOps.exif_transpose(image)
        image = _converted(image, self.mode)
        if self.fit == "stretch":
            return np.asarray(image.resize((self.crop[1], self.crop[0]), self._filter()))
        if self.exact:
            return np.asarray(self._resized_then_cropped(image, target))
        return np.asarray(self._resized_crop(image, target))

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

    def decode_many(self, images: Sequence[bytes | bytearray | memoryview], what: str = "image") -> np.ndarray:
        """Several encoded images of one request -> uint8 ``(n, height, width, channels)``."""
        if not images:
            raise MalformedRequest(f"the request holds no {what}s")
        out = np.empty((len(images), *self.pixels_shape), np.uint8)
        for idx, data in enumerate(images):
            pixels = self.decode(data, what if len(images) == 1 else f"{what} {idx}")
            out[idx] = pixels if pixels.ndim == 3 else pixels[..., np.newaxis]
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
