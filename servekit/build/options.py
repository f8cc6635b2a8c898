"""The user's model from the options they give (``servekit export`` / ``servekit variants`` flags, or the same
fields from Python): the signature, the task, held-out data, then the validated export or the variant job.

The CLI only turns flags into these dataclasses; library code (demos, benchmarks) builds them directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from handlers.config import CLASSIFICATION, DEFAULT_THRESHOLD, TASKS, HandlerConfig, InputContract
from handlers.errors import ConfigError
from handlers.signature import InputSpec, Signature
from servekit.build.defaults import DEFAULT_ATOL, DEFAULT_BUILD_DIR, DEFAULT_RTOL, FORMATS, OUTPUT_NAME
from servekit.build.export import AOTI_FILE
from servekit.build.images import heldout_images, image_signature, wants_image
from servekit.build.model_config import MODEL_CONFIG_FILE, Batching
from servekit.build.model_dir import ModelBuild, build_model_dir
from servekit.build.user_model import UserModelError, heldout_inputs, load_npy, load_user_model
from servekit.build.variants import VariantInputs

FORMAT_NAMES = {"torchscript": "TorchScript", "onnx": "ONNX", "aoti": "AOTInductor"}


@dataclass(frozen=True)
class ImageOptions:
    """``--image-*``: the only input is an image, preprocessed as declared (None = the default)."""

    image: bool = False
    image_resize: int | None = None
    image_crop: int | None = None
    image_mean: str | None = None
    image_std: str | None = None
    image_scale: float | None = None
    image_mode: str | None = None
    image_layout: str | None = None
    image_max_pixels: int | None = None
    no_exif: bool = False


@dataclass(frozen=True)
class ExportOptions(ImageOptions):
    """Everything ``servekit export --factory`` takes, with the CLI's defaults."""

    factory: str = ""
    name: str | None = None
    task: str | None = None
    weights: Path | None = None
    random_weights: bool = False  # the factory's own initialisation, said on purpose (else --weights is required)
    inputs: tuple[str, ...] = ()  # NAME:DTYPE:DIMS[:MIN..MAX], in forward()'s order
    outputs: tuple[str, ...] = ()
    input_name: str = "input"
    input_shape: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    labels: str | None = None  # comma-separated
    multi_label: bool = False
    threshold: float = DEFAULT_THRESHOLD
    normalize: bool = False
    heldout: Path | None = None
    tokenizer: Path | None = None
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    formats: str = ",".join(FORMATS)
    batching: Batching = field(default_factory=Batching)
    build_dir: Path = DEFAULT_BUILD_DIR


def parse_formats(text: str) -> tuple[str, ...]:
    """``"torchscript,onnx"`` -> the formats, refusing unknown ones."""
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    if not formats or set(formats) - set(FORMATS):
        raise ConfigError(f"--formats must be a comma-separated subset of {','.join(FORMATS)}; got {text!r}")
    return formats


def export_user_model(options: ExportOptions) -> Path:
    """Load the user's model, export and validate it into ``build_dir/NAME``; print what was validated."""
    if not options.name or not options.task:
        raise UserModelError(f"--factory needs --name and --task ({'|'.join(TASKS)}): the export never guesses "
                             "what the outputs mean")
    signature = signature_from_options(options)
    if wants_image(options):
        signature = image_signature(signature, options)
    model = load_user_model(options.factory, options.weights, options.random_weights)
    task: dict = {"task": options.task}
    if options.multi_label:
        task.update(multi_label=True, threshold=options.threshold)
    if options.normalize:
        task["normalize"] = True
    if options.tokenizer is not None and not options.tokenizer.is_file():
        raise UserModelError(f"tokenizer file {options.tokenizer} does not exist")
    labels = tuple(options.labels.split(",")) if options.labels else ()
    build = ModelBuild(options.name, signature, labels, options.batching, task=task, tokenizer=options.tokenizer,
                       formats=parse_formats(options.formats))
    if signature.images and (options.heldout is None or options.heldout.is_dir()):
        heldout = heldout_images(options.heldout, signature)  # real photos, preprocessed as the handler does
    else:
        heldout = heldout_inputs(options.heldout, signature)
    return export_build(model, build, heldout, options.build_dir, options.rtol, options.atol)


def export_build(model, build: ModelBuild, heldout, build_dir: Path, rtol: float = DEFAULT_RTOL,
                 atol: float = DEFAULT_ATOL) -> Path:
    """Export and validate one build into ``build_dir/NAME`` with progress lines; returns the folder."""
    print(f"exporting {build.name} -> {build_dir / build.name}")
    written = build_model_dir(model, build, heldout, build_dir / build.name, rtol=rtol, atol=atol)
    validated = [FORMAT_NAMES[f] for f in build.formats if f != "aoti" or (written / AOTI_FILE).exists()]
    print(f"validated {build.name}: {', '.join(validated)} match eager PyTorch (rtol={rtol:g}, atol={atol:g})")
    return written


def signature_from_options(options: ExportOptions) -> Signature:
    """From repeated --input/--output, or the one float32 input of --input-name/--input-shape/--min/--max."""
    outputs = tuple(options.outputs or (OUTPUT_NAME,))
    if options.inputs:
        if options.input_shape:
            raise ConfigError("give either --input (any number) or --input-shape, not both")
        return Signature(tuple(parse_input_option(text, options.min_value, options.max_value)
                               for text in options.inputs), outputs)
    if not options.input_shape:
        raise ConfigError("--factory needs its inputs: --input NAME:DTYPE:DIMS (repeatable) or --input-shape")
    try:
        shape = tuple(int(d) for d in options.input_shape.split(","))
    except ValueError:
        raise UserModelError(f"--input-shape must be comma-separated integers like 3,32,32; "
                             f"got {options.input_shape!r}") from None
    return Signature((InputContract(options.input_name, shape, "float32", options.min_value, options.max_value),),
                     outputs)


def parse_input_option(text: str, min_value: float | None = None, max_value: float | None = None) -> InputSpec:
    """``NAME:DTYPE:DIMS[:MIN..MAX]`` -> InputSpec; DIMS comma-separated, ``LOW..HIGH`` for a dynamic one.

    ``--min``/``--max`` apply to every input that gives no range of its own.
    """
    parts = text.split(":")
    if len(parts) not in (3, 4) or not all(parts[:3]):
        raise ConfigError(f"--input {text!r} must look like NAME:DTYPE:DIMS[:MIN..MAX], e.g. input_ids:int64:1..128")
    name, dtype, dims = parts[:3]
    if len(parts) == 4:
        low, separator, high = parts[3].partition("..")
        try:
            if not separator:
                raise ValueError(parts[3])
            min_value, max_value = float(low), float(high)
        except ValueError:
            raise ConfigError(f"--input {text!r}: the range must look like MIN..MAX, e.g. 0..29999") from None
    return InputSpec(name, tuple(dims.split(",")), dtype, min_value, max_value)


@dataclass(frozen=True)
class VariantOptions:
    """``servekit variants --factory``: the user's model, exported before, with labelled held-out data."""

    factory: str
    name: str | None
    heldout: Path | None
    heldout_labels: Path | None
    weights: Path | None = None
    calibration: Path | None = None
    calibration_labels: Path | None = None
    finetune_epochs: int = 0
    build_dir: Path = DEFAULT_BUILD_DIR
    random_weights: bool = False  # the factory's own initialisation, said on purpose (else --weights is required)


def user_variant_inputs(options: VariantOptions) -> VariantInputs:
    """The variant job of a bring-your-own model, exported before with ``servekit export``."""
    from servekit.build.export import ExportSpec

    missing = [flag for flag, value in (("--name", options.name), ("--heldout", options.heldout)) if value is None]
    if missing:
        raise UserModelError(f"variants of your own model need {', '.join(missing)}")
    base_dir = options.build_dir / options.name
    if not (base_dir / MODEL_CONFIG_FILE).exists():
        raise UserModelError(f"{base_dir / MODEL_CONFIG_FILE} is missing: run 'servekit export --factory ... "
                             f"--name {options.name}' first")
    config = HandlerConfig.from_model_yaml(yaml.safe_load((base_dir / MODEL_CONFIG_FILE).read_text()))
    signature, classifier = config.signature, config.task == CLASSIFICATION
    if classifier and options.heldout_labels is None:
        raise UserModelError("variants of a classifier need --heldout-labels (its accuracy gate needs labelled data)")

    def inputs(path: Path) -> np.ndarray | dict[str, np.ndarray]:
        arrays = heldout_inputs(path, signature)  # .npy for one input, .npz with one array per input
        return arrays[signature.single.name].astype(np.float32) if signature.single is not None else arrays

    def labels(path: Path) -> np.ndarray:
        return load_npy(path).astype(np.int64)

    x_test = inputs(options.heldout)
    y_test = labels(options.heldout_labels) if classifier else None  # other tasks are gated against FP32 alone
    x_cal = inputs(options.calibration) if options.calibration else x_test
    y_cal = labels(options.calibration_labels) if options.calibration_labels else None
    if options.finetune_epochs and y_cal is None:
        raise UserModelError("--finetune-epochs needs --calibration and --calibration-labels")
    return VariantInputs(options.name, load_user_model(options.factory, options.weights, options.random_weights),
                         ExportSpec.of(signature), base_dir, x_cal,
                         y_cal if y_cal is not None else np.zeros(_count(x_cal), np.int64), x_test, y_test, config.task)


def _count(x: np.ndarray | dict[str, np.ndarray]) -> int:
    return len(next(iter(x.values())) if isinstance(x, dict) else x)
