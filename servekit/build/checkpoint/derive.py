"""What a ``save_pretrained`` folder says about serving it: the task (from the architecture's class name), the
labels (``id2label``), the signature (the inputs ``forward`` takes, their dtypes, value ranges and lengths),
the tokenizer, the image preprocessing (``preprocessor_config.json``) and the audio settings (the feature
extractor). Each derived item is one line of ``Derived.lines``; what the folder does not say is a
``CheckpointError`` naming the flag that supplies it.

transformers is imported where a model is loaded (``from_pretrained(..., local_files_only=True)``: never a hub).
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from handlers.audio import AudioPreprocess
from handlers.config import (CLASSIFICATION, DEFAULT_AGGREGATION, DEFAULT_DOC_STRIDE, DEFAULT_MAX_ANSWER_LENGTH,
                             DEFAULT_WINDOW, EMBEDDING, QUESTION_ANSWERING, TOKEN_CLASSIFICATION)
from handlers.errors import ConfigError
from handlers.image import ImagePreprocess
from handlers.signature import InputSpec, Signature
from servekit.build.checkpoint.wrappers import LOGITS, POOLED, POOLINGS, SPAN, AudioModel, ImageModel, TextModel
from servekit.build.defaults import DEFAULT_MAX_SECONDS

CONFIG_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG = "config.json", "tokenizer.json", "tokenizer_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
HEADS = {  # architecture class name suffix -> task
    "ForSequenceClassification": CLASSIFICATION,
    "ForImageClassification": CLASSIFICATION,
    "ForAudioClassification": CLASSIFICATION,
    "ForTokenClassification": TOKEN_CLASSIFICATION,
    "ForQuestionAnswering": QUESTION_ANSWERING,
}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_MAX_LENGTH = 512  # tokens, when the model allows more (validation and padding cost grow with it)
MIN_FRAMES = 2  # the shortest clip: two frames out of the conv feature encoder (torch.export specialises one)
UNBOUNDED_TOKENIZER_LENGTH = 10**9  # tokenizer_config's "no limit" (VERY_LARGE_INTEGER)
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
WAVEFORM_EXTRACTORS = ("Wav2Vec2FeatureExtractor",)


class CheckpointError(ConfigError):
    """The folder does not say something the export needs; the message names the flag that gives it."""


@dataclass(frozen=True)
class CheckpointOptions:
    """What a user may add to (or override in) what the folder says."""

    pooling: str | None = None  # base models: embeddings pooled by mean or cls
    max_length: int | None = None  # text: the longest sequence served (default: the model's, at most 512)
    max_seconds: float = DEFAULT_MAX_SECONDS  # audio: the longest clip
    aggregation: str = DEFAULT_AGGREGATION  # token classification
    pad_token_id: int | None = None  # GPT-2 style classifiers without one in config.json
    tokenizer: Path | None = None  # a tokenizer.json elsewhere than the folder
    architecture: str | None = None  # when config.json names none or several
    image_crop: int | None = None  # images whose processor keeps the aspect ratio: the square crop to serve


@dataclass
class Derived:
    """Everything servekit needs to export, validate and serve the folder's model."""

    architecture: str
    task: str
    modality: str  # text | image | audio
    labels: tuple[str, ...]
    signature: Signature
    wrapper: nn.Module
    tokenizer: Path | None = None
    task_settings: dict[str, Any] = field(default_factory=dict)  # handler settings besides labels and tokenizer
    lines: list[str] = field(default_factory=list)  # one per derived item, for the console
    single_request_batches: bool = False  # padding changes this model's answers: one request per batch


def read_json(path: Path) -> dict:
    """A JSON file as a dict, or {} when it does not exist."""
    return json.loads(path.read_text()) if path.exists() else {}


def architecture_of(config: Any, options: CheckpointOptions) -> str:
    """The model class config.json names (``architectures``), or ``--architecture``."""
    if options.architecture:
        return options.architecture
    names = list(getattr(config, "architectures", None) or [])
    if len(names) != 1:
        raise CheckpointError(f"config.json names architectures {names}; give --architecture CLASS "
                              "(e.g. BertForSequenceClassification)")
    return names[0]


def task_of(architecture: str, pooling: str | None) -> str:
    """The task from the class name's head; a base model (``...Model``) serves pooled embeddings."""
    for suffix, task in HEADS.items():
        if architecture.endswith(suffix):
            return task
    if architecture.endswith("Model"):
        if pooling is None:
            raise CheckpointError(f"{architecture} is a base model without a head: give --pooling mean|cls to serve "
                                  "its embeddings (or export a ...For<Task> checkpoint)")
        return EMBEDDING
    raise CheckpointError(f"cannot tell the task of {architecture}: servekit serves ...ForSequenceClassification, "
                          "...ForTokenClassification, ...ForQuestionAnswering, ...ForImageClassification, "
                          "...ForAudioClassification, or a base model with --pooling mean|cls")


def load_checkpoint(folder: Path, options: CheckpointOptions = CheckpointOptions()) -> tuple[Any, nn.Module, str]:
    """config, the model (eval, from the folder only) and its architecture name."""
    import transformers

    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_FILE}: --transformers takes a folder written by save_pretrained")
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    architecture = architecture_of(config, options)
    model_class = getattr(transformers, architecture, None)
    if model_class is None:
        raise CheckpointError(f"transformers {transformers.__version__} has no class {architecture}; "
                              "give --architecture with one it has")
    model = model_class.from_pretrained(folder, local_files_only=True).eval()
    return config, model, architecture


def derive(folder: Path, options: CheckpointOptions = CheckpointOptions()) -> Derived:
    """Read the folder; load the model; say what was derived, one line per item."""
    if options.pooling is not None and options.pooling not in POOLINGS:
        raise CheckpointError(f"--pooling must be one of {POOLINGS}, got {options.pooling!r}")
    config, model, architecture = load_checkpoint(folder, options)
    task = task_of(architecture, options.pooling)
    lines = [f"task: {task} (architecture {architecture})"]
    labels: tuple[str, ...] = ()
    if task in (CLASSIFICATION, TOKEN_CLASSIFICATION):
        id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        labels = tuple(id2label.get(i, str(i)) for i in range(len(id2label)))
        lines.append(f"labels: {', '.join(labels)} (config.json id2label)")
    forward = inspect.signature(model.forward).parameters
    if "input_ids" in forward:
        return _text(folder, config, model, architecture, task, labels, forward, options, lines)
    if "pixel_values" in forward:
        return _image(folder, config, model, architecture, task, labels, options, lines)
    if "input_values" in forward or "input_features" in forward:
        return _audio(folder, config, model, architecture, task, labels, forward, options, lines)
    raise CheckpointError(f"{architecture}.forward takes {list(forward)}; servekit serves text (input_ids), images "
                          "(pixel_values) and raw-waveform audio (input_values)")


def text_length_limit(model: nn.Module, config: Any, tokenizer_config: dict) -> tuple[int | None, str]:
    """The longest sequence the model takes, and why: its learned positions (less the offset of models that
    number positions from padding_idx + 1, as RoBERTa and MPNet do), or the tokenizer's model_max_length."""
    limit, why = None, ""
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    table = getattr(getattr(getattr(model, "base_model", model), "embeddings", None), "position_embeddings", None)
    if positions:
        offset = table.padding_idx + 1 if isinstance(table, nn.Embedding) and table.padding_idx is not None else 0
        limit, why = positions - offset, f"max_position_embeddings {positions}" + (f" less {offset}" if offset else "")
    model_max = tokenizer_config.get("model_max_length")
    if isinstance(model_max, int) and model_max < UNBOUNDED_TOKENIZER_LENGTH and (limit is None or model_max < limit):
        limit, why = model_max, f"tokenizer_config.json model_max_length {model_max}"
    return limit, why


def _text(folder: Path, config: Any, model: nn.Module, architecture: str, task: str, labels: tuple[str, ...],
          forward: Any, options: CheckpointOptions, lines: list[str]) -> Derived:
    tokenizer = options.tokenizer or folder / TOKENIZER_FILE
    if not tokenizer.is_file():
        raise CheckpointError(f"{folder} has no {TOKENIZER_FILE} (a fast tokenizer): save it with "
                              "tokenizer.save_pretrained(DIR), or give --tokenizer FILE")
    limit, why = text_length_limit(model, config, read_json(folder / TOKENIZER_CONFIG))
    if options.max_length is not None:
        if limit is not None and options.max_length > limit:
            raise CheckpointError(f"--max-length {options.max_length} exceeds what the model takes: {limit} ({why})")
        length, why = options.max_length, "--max-length"
    elif limit is None:
        raise CheckpointError("neither config.json nor tokenizer_config.json says the longest input: give --max-length N")
    elif limit > DEFAULT_MAX_LENGTH:
        length, why = DEFAULT_MAX_LENGTH, f"{why}, capped at {DEFAULT_MAX_LENGTH}: --max-length to change"
    else:
        length = limit
    vocab = int(config.vocab_size)
    pad = options.pad_token_id if options.pad_token_id is not None else getattr(config, "pad_token_id", None)
    if pad is None and task == CLASSIFICATION and "GPT" in architecture.upper():
        raise CheckpointError(f"{architecture} classifies at the last token that is not padding, but config.json has no "
                              "pad_token_id: give --pad-token-id (often the eos id)")
    if pad is not None:
        model.config.pad_token_id = pad  # the classifier finds the last real token by it
    pad_id = int(pad or 0)
    dims = (f"1..{length}",)
    inputs = [InputSpec("input_ids", dims, "int64", 0, vocab - 1, pad_id)]
    lines.append(f"input_ids: int64, length 1..{length} ({why}), ids 0..{vocab - 1} (vocab_size), padding id {pad_id}")
    if "attention_mask" in forward:
        inputs.append(InputSpec("attention_mask", dims, "int64", 0, 1, 0))
        lines.append("attention_mask: int64 0..1")
    types = int(getattr(config, "type_vocab_size", 0) or 0)
    if "token_type_ids" in forward and types > 1:
        inputs.append(InputSpec("token_type_ids", dims, "int64", 0, types - 1, 0))
        lines.append(f"token_type_ids: int64 0..{types - 1} (type_vocab_size)")
    head = {QUESTION_ANSWERING: SPAN, EMBEDDING: POOLED}.get(task, LOGITS)
    outputs = {SPAN: ("start_logits", "end_logits"), POOLED: ("embedding",)}.get(head, ("logits",))
    settings: dict[str, Any] = {}
    if task == TOKEN_CLASSIFICATION:
        settings["aggregation"] = options.aggregation
        lines.append(f"entities: aggregation {options.aggregation} (--aggregation none|simple)")
    if task == QUESTION_ANSWERING:
        window = min(DEFAULT_WINDOW, length)
        stride = min(DEFAULT_DOC_STRIDE, window // 2)
        settings.update(window=window, doc_stride=stride, max_answer_length=DEFAULT_MAX_ANSWER_LENGTH)
        lines.append(f"long contexts: windows of {window} tokens overlapping by {stride}, answers of at most "
                     f"{DEFAULT_MAX_ANSWER_LENGTH} tokens (as transformers' pipeline)")
    if task == EMBEDDING:
        lines.append(f"embedding: {options.pooling} pooling of last_hidden_state ({getattr(config, 'hidden_size', '?')} values)")
    lines.append(f"tokenizer: {tokenizer} shipped in the archive (requests may send text)")
    return Derived(architecture, task, "text", labels, Signature(tuple(inputs), outputs),
                   TextModel(model, head, options.pooling or "mean").eval(), tokenizer, settings, lines)


def image_preprocess(processor: dict, channels: int, crop_option: int | None = None) -> tuple[ImagePreprocess, str]:
    """transformers' image processor settings as our ImagePreprocess (exact: equal to its output), and a summary."""
    size = processor.get("size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    resample = RESAMPLE_NAMES.get(int(processor.get("resample", 2)), "bilinear")
    crop_size = processor.get("crop_size") if processor.get("do_center_crop") else None
    if isinstance(crop_size, int):
        crop_size = {"height": crop_size, "width": crop_size}
    if "height" in size and "width" in size:
        crop, resize, fit = (int(size["height"]), int(size["width"])), None, "stretch"
        how = f"resize to {crop[0]}x{crop[1]}"
    elif "shortest_edge" in size:
        short = int(size["shortest_edge"])
        if processor.get("crop_pct") and short < 384:  # ConvNeXt: shorter side short / crop_pct, crop short
            resize, crop = int(short / processor["crop_pct"]), (short, short)
            how = f"shorter side {resize} (shortest_edge {short} / crop_pct {processor['crop_pct']}), centre crop {short}"
        elif crop_size:
            resize, crop = short, (int(crop_size["height"]), int(crop_size["width"]))
            how = f"shorter side {short}, centre crop {crop[0]}x{crop[1]}"
        elif crop_option is not None:
            resize, crop = max(short, crop_option), (crop_option, crop_option)
            how = f"shorter side {resize}, centre crop {crop_option} (--image-crop)"
        else:
            raise CheckpointError(f"{PREPROCESSOR_FILE} resizes the shorter side to {short} and keeps the aspect ratio, "
                                  "so the model's input has no fixed shape: give --image-crop PIXELS")
        fit = "crop"
    else:
        raise CheckpointError(f"{PREPROCESSOR_FILE} has size {size}, which servekit does not read: give "
                              "--image-resize/--image-crop")
    normalize = processor.get("do_normalize", True)
    mean = tuple(processor.get("image_mean", (0.0,))) if normalize else (0.0,)
    std = tuple(processor.get("image_std", (1.0,))) if normalize else (1.0,)
    scale = float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 1.0
    preprocess = ImagePreprocess(crop=crop, resize=resize, mode="RGB" if channels == 3 else "L", scale=scale,
                                 mean=mean, std=std, fit=fit, resample=resample, exact=True)
    summary = (f"{how}, {resample}, scale {scale:.6g}, mean {list(preprocess.mean)}, std {list(preprocess.std)} "
               f"({PREPROCESSOR_FILE}; decoded exactly as transformers' image processor)")
    return preprocess, summary


def _image(folder: Path, config: Any, model: nn.Module, architecture: str, task: str, labels: tuple[str, ...],
           options: CheckpointOptions, lines: list[str]) -> Derived:
    processor = read_json(folder / PREPROCESSOR_FILE)
    if not processor:
        raise CheckpointError(f"{folder} has no {PREPROCESSOR_FILE}: save the image processor with "
                              "save_pretrained(DIR), or export with --factory and --image-* options")
    channels = int(getattr(config, "num_channels", 3))
    preprocess, summary = image_preprocess(processor, channels, options.image_crop)
    lines.append(f"image: {summary}")
    spec = InputSpec("pixel_values", preprocess.model_shape(), "float32", image=preprocess)
    lines.append(f"pixel_values: float32 {list(preprocess.model_shape())}, requests send JPEG/PNG/WebP")
    return Derived(architecture, task, "image", labels, Signature((spec,), ("logits",)), ImageModel(model).eval(),
                   lines=lines)


def conv_samples(config: Any, frames: int = MIN_FRAMES) -> int:
    """Samples the conv feature encoder needs to give ``frames`` frames."""
    size = frames
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        size = (size - 1) * stride + kernel
    return size


def _audio(folder: Path, config: Any, model: nn.Module, architecture: str, task: str, labels: tuple[str, ...],
           forward: Any, options: CheckpointOptions, lines: list[str]) -> Derived:
    extractor = read_json(folder / PREPROCESSOR_FILE)
    kind = extractor.get("feature_extractor_type", "")
    if "input_features" in forward or (kind and kind not in WAVEFORM_EXTRACTORS):
        raise CheckpointError(f"{architecture} takes {kind or 'spectrogram'} features computed outside the model; "
                              "servekit serves raw-waveform audio models (Wav2Vec2, HuBERT, WavLM, Data2VecAudio)")
    rate = extractor.get("sampling_rate")
    if rate is None:
        raise CheckpointError(f"{folder} has no {PREPROCESSOR_FILE} with sampling_rate: save the feature extractor "
                              "with save_pretrained(DIR)")
    rate = int(rate)
    shortest = conv_samples(config) if hasattr(config, "conv_kernel") else rate // 100
    longest = int(rate * options.max_seconds)
    if longest < shortest:
        raise CheckpointError(f"--max-seconds {options.max_seconds} is shorter than the shortest clip the model takes "
                              f"({shortest} samples)")
    dims = (f"{shortest}..{longest}",)
    audio = AudioPreprocess(rate, shortest, longest)
    normalize = bool(extractor.get("do_normalize", True))
    takes_mask = bool(extractor.get("return_attention_mask", False)) and "attention_mask" in forward
    signature = Signature((InputSpec("input_values", dims, "float32", audio=audio),
                           InputSpec("attention_mask", dims, "int64", 0, 1, 0)), ("logits",))
    lines.append(f"audio: {rate} Hz mono, {shortest / rate:.3g} to {options.max_seconds:g} s (--max-seconds), other "
                 f"rates resampled; requests send WAV ({PREPROCESSOR_FILE})")
    lines.append(f"normalisation: {'zero mean, unit variance per clip, in the graph' if normalize else 'none'} (do_normalize)")
    if not takes_mask:
        lines.append("padding: the model takes no attention mask (group-norm feature encoder), so padding a clip "
                     "changes its answer: served one request per batch, one clip per request")
    else:
        lines.append("attention_mask: int64 0..1, made by the handler (1 per real sample)")
    return Derived(architecture, task, "audio", labels, signature, AudioModel(model, normalize, takes_mask).eval(),
                   lines=lines, single_request_batches=not takes_mask)
