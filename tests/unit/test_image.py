"""Image preprocessing as declared in model-config.yaml: formats, conversions, EXIF, draft decode,
the pixel limit before decoding, and the batch normalisation."""
from __future__ import annotations

import io

import numpy as np
import pytest

from handlers.config import HandlerConfig
from handlers.errors import MalformedRequest, TooManyPixels, UnsupportedMediaType
from handlers.image import ImagePreprocess, sniff_format
from handlers.errors import ConfigError
from servekit.build.images import encode, sample_photos
from support.image_models import png_bomb, photos

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def naive(data: bytes, resize: int, crop: int) -> np.ndarray:
    """The textbook way: full decode, resize the shorter side, centre crop."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    factor = resize / min(width, height)
    image = image.resize((round(width * factor), round(height * factor)), Image.Resampling.BILINEAR)
    left, top = (image.size[0] - crop) // 2, (image.size[1] - crop) // 2
    return np.asarray(image.crop((left, top, left + crop, top + crop)))


def test_every_accepted_format_and_conversion_gives_the_models_pixels() -> None:
    preprocess = ImagePreprocess(crop=(24, 32), resize=40)
    for name, data in photos().items():
        pixels = preprocess.decode(data, name)
        assert pixels.shape == (24, 32, 3) and pixels.dtype == np.uint8, name
    grey = ImagePreprocess(crop=16, mode="L").decode(photos()["jpeg"])
    assert grey.shape == (16, 16)


def test_decode_matches_the_naive_full_decode_closely_on_a_real_photo() -> None:
    data = encode(sample_photos()[0])
    ours = ImagePreprocess(crop=224, resize=256).decode(data).astype(float)
    reference = naive(data, 256, 224).astype(float)
    assert np.abs(ours - reference).mean() < 3.0  # the same picture, not merely the same shape


def test_draft_decoding_of_a_large_jpeg_stays_close_to_the_full_decode() -> None:
    from PIL import Image

    photo = Image.fromarray(sample_photos()[1]).resize((2560, 1708), Image.Resampling.BICUBIC)
    data = encode(np.asarray(photo))
    ours = ImagePreprocess(crop=224, resize=256).decode(data).astype(float)
    assert np.abs(ours - naive(data, 256, 224).astype(float)).mean() < 4.0


def test_exif_orientation_is_applied() -> None:
    upright = ImagePreprocess(crop=64, resize=64).decode(encode(sample_photos()[1])).astype(float)
    rotated = photos()["exif rotated"]
    applied = ImagePreprocess(crop=64, resize=64).decode(rotated).astype(float)
    ignored = ImagePreprocess(crop=64, resize=64, exif=False).decode(rotated).astype(float)
    assert np.abs(applied - upright).mean() < 6.0
    assert np.abs(ignored - upright).mean() > 3 * np.abs(applied - upright).mean()


def test_alpha_is_laid_on_white_and_grey_becomes_three_equal_channels() -> None:
    transparent = encode(np.zeros((8, 8, 4), np.uint8), "PNG")
    assert (ImagePreprocess(crop=8).decode(transparent) == 255).all()
    grey = ImagePreprocess(crop=8).decode(photos()["grey"])
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


@pytest.mark.parametrize("data, error, fragment", [
    (b"GIF89a" + b"\0" * 20, UnsupportedMediaType, "is GIF"),
    (b"BM" + b"\0" * 40, UnsupportedMediaType, "is BMP"),
    (b"not an image at all", MalformedRequest, "not a JPEG, PNG or WebP"),
    (b"\xff\xd8\xff\xe0" + b"\x13" * 200, MalformedRequest, "damaged"),
    (png_bomb(), TooManyPixels, "decompression bomb"),
    (png_bomb(2000, 1000), TooManyPixels, "2000x1000 = 2,000,000 pixels"),
])
def test_bad_images_get_their_own_error(data: bytes, error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        ImagePreprocess(crop=8, max_pixels=1_000_000).decode(data)


def test_a_truncated_image_is_refused_not_half_decoded() -> None:
    data = photos()["jpeg"]
    with pytest.raises(MalformedRequest, match="truncated"):
        ImagePreprocess(crop=8).decode(data[:len(data) // 2])


def test_sniffing_trusts_bytes() -> None:
    assert [sniff_format(photos()[k]) for k in ("jpeg", "png", "webp")] == ["JPEG", "PNG", "WEBP"]


def test_the_batch_is_normalised_at_once_into_one_reused_buffer() -> None:
    preprocess = ImagePreprocess(crop=(2, 3), **IMAGENET)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 2, 3, 3), dtype=np.uint8)
    out = preprocess.to_model([pixels[:2], pixels[2:]])
    expected = (pixels / 255.0 - np.array(IMAGENET["mean"])) / np.array(IMAGENET["std"])
    np.testing.assert_allclose(out, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    again = preprocess.to_model([pixels[:3]])
    assert np.shares_memory(out, again)  # no new allocation for a batch that fits
    hwc = ImagePreprocess(crop=(2, 3), layout="HWC").to_model([pixels])
    np.testing.assert_allclose(hwc, pixels / 255.0, rtol=1e-6)


def test_preprocessing_reads_and_writes_model_config() -> None:
    section = {"handler": {"input": {"name": "image", "shape": [3, 224, 224], "dtype": "float32",
                                     "image": {"resize": 256, **{k: list(v) for k, v in IMAGENET.items()}}},
                           "labels": ["a", "b"]}}
    config = HandlerConfig.from_model_yaml(section)
    preprocess = config.signature.images["image"]
    assert preprocess.crop == (224, 224) and preprocess.resize == 256 and preprocess.exif
    assert HandlerConfig.from_model_yaml({"handler": config.to_section()}).signature == config.signature


@pytest.mark.parametrize("image, fragment", [
    ({"crop": 200}, "disagrees with its preprocessing"),
    ({"resize": 100}, "smaller than the crop"),
    ({"mean": [0.5, 0.5]}, "needs 3 values"),
    ({"mode": "CMYK"}, "image mode"),
    ({"layout": "NCHW"}, "layout"),
    ({"rotate": 90}, "unknown"),
])
def test_wrong_preprocessing_is_refused_when_loaded(image: dict, fragment: str) -> None:
    section = {"handler": {"input": {"name": "image", "shape": [3, 224, 224], "image": image}}}
    with pytest.raises(ConfigError, match=fragment):
        HandlerConfig.from_model_yaml(section)


@pytest.mark.parametrize("options, fragment", [
    (("--image-crop", "30"), "disagrees with its preprocessing"),
    (("--image-mean", "0.5,x"), "comma-separated numbers"),
    (("--image-std", "0.5,0.5"), "needs 3 values"),
])
def test_export_refuses_image_options_that_disagree_with_the_input(options, fragment, tmp_path, capsys) -> None:
    from servekit.cli import main

    status = main(["export", "--factory", "servekit.examples.vision:tiny_vision", "--random-weights", "--name", "x", "--task", "classification",
                   "--input", "image:float32:3,32,32", *options, "--build-dir", str(tmp_path)])
    assert status == 2 and fragment in capsys.readouterr().err


def test_image_options_make_the_only_input_an_image(tmp_path) -> None:
    from servekit.examples.vision import export_tiny_vision

    import yaml

    model_dir = export_tiny_vision(tmp_path, image_layout="CHW", no_exif=True)
    section = yaml.safe_load((model_dir / "model-config.yaml").read_text())["handler"]
    image = section["input"]["image"]
    assert image["resize"] == 40 and image["crop"] == [32, 32] and image["exif"] is False
    assert image["mean"] == pytest.approx([0.485, 0.456, 0.406]) and image["max_pixels"] == 1_000_000
