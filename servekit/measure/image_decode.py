"""What decoding costs: our image decode (draft + one resize of the crop's box) against the naive full
decode, for a camera photo and a 12-megapixel one; and whether a thread pool pays for a batch."""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from handlers.image import ImagePreprocess
from servekit.build.images import IMAGENET_MEAN, IMAGENET_STD, encode, sample_photos
from servekit.measure.timing import median_seconds

TWELVE_MP = (4000, 3000)
RESIZE, CROP = 256, 224


def naive_preprocess(data: bytes) -> np.ndarray:
    """The way the docs show it, per image: full decode, RGB, resize the shorter side, centre crop, normalise."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    factor = RESIZE / min(width, height)
    image = image.resize((round(width * factor), round(height * factor)), Image.Resampling.BILINEAR)
    left, top = (image.size[0] - CROP) // 2, (image.size[1] - CROP) // 2
    pixels = np.asarray(image.crop((left, top, left + CROP, top + CROP)), np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


def twelve_megapixel_jpeg() -> bytes:
    """A real photo (scikit-learn's flower) upscaled to 4000x3000, as a phone would send it."""
    from PIL import Image

    photo = Image.fromarray(sample_photos()[1]).resize(TWELVE_MP, Image.Resampling.BICUBIC)
    return encode(np.asarray(photo))


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds (after one warm-up call)."""
    return median_seconds(fn, repeats, warmup=1) * 1e3


def measure_decode(repeats: int = 15) -> dict:
    """Per image and per batch of 16: ours vs naive; serial vs a 2-thread pool."""
    preprocess = ImagePreprocess(crop=CROP, resize=RESIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    camera = encode(sample_photos()[0])
    big = twelve_megapixel_jpeg()

    def ours(data: bytes) -> np.ndarray:
        return preprocess.to_model([preprocess.decode_many([data])])

    batch = [camera] * 16

    def serial() -> np.ndarray:
        return preprocess.to_model([preprocess.decode_many([d]) for d in batch])

    with ThreadPoolExecutor(max_workers=2) as pool:
        def pooled() -> np.ndarray:
            return preprocess.to_model(list(pool.map(lambda d: preprocess.decode_many([d]), batch)))

        results = {
            "photo_640x427": {"ours_ms": median_ms(lambda: ours(camera), repeats * 4),
                              "naive_ms": median_ms(lambda: naive_preprocess(camera), repeats * 4)},
            "photo_12mp": {"bytes": len(big), "ours_ms": median_ms(lambda: ours(big), repeats),
                           "naive_ms": median_ms(lambda: naive_preprocess(big), repeats)},
            "batch16_640x427": {"serial_ms": median_ms(serial, repeats), "pool2_ms": median_ms(pooled, repeats),
                                "naive_ms": median_ms(lambda: np.stack([naive_preprocess(d) for d in batch]), repeats)},
        }
    for row in results.values():
        if "ours_ms" in row:
            row["ratio"] = row["ours_ms"] / row["naive_ms"]
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(measure_decode(), indent=2))
