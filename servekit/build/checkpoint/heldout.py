"""Held-out inputs for validating a transformers export: real ones when given (a text file of sentences, or of
``question<TAB>context`` lines for question answering; a folder of images or WAV files; an .npz with one
array per input), else generated ones (random token ids, sample photographs, noise and tones). Generated
data proves the formats agree on inputs of every declared length; it says nothing about inputs that look
like the model's real traffic, which is why real data is better."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from handlers.audio import pad_clips
from handlers.config import QUESTION_ANSWERING
from handlers.signature import Range, Signature
from servekit.build.checkpoint.derive import CheckpointError, Derived
from servekit.build.export import TRACE_BATCH, ExportSpec
from servekit.build.images import heldout_images
from servekit.build.user_model import MIN_HELDOUT, heldout_inputs
from servekit.build.validate import validation_batch

SEED = 0
WAV_SUFFIX = ".wav"
TONE_HZ = (220.0, 440.0, 880.0, 1760.0)


def heldout_for(derived: Derived, path: Path | None) -> tuple[dict[str, np.ndarray], str]:
    """The held-out inputs by name and a line saying where they came from."""
    if path is not None and not path.exists():
        raise CheckpointError(f"--heldout {path} does not exist")
    if derived.modality == "image":
        if path is not None and path.is_file():
            return heldout_inputs(path, derived.signature), f"held-out: {path} (real inputs)"
        arrays = heldout_images(path, derived.signature)
        return arrays, (f"held-out: the images of {path} (real inputs)" if path is not None else
                        f"held-out: {len(next(iter(arrays.values())))} crops of two sample photographs (generated: weaker "
                        "than your own images, give --heldout DIR)")
    if path is not None and path.suffix in (".npz", ".npy"):
        return heldout_inputs(path, derived.signature), f"held-out: {path} (real inputs)"
    if derived.modality == "audio":
        if path is not None:
            return _wav_folder(path, derived.signature), f"held-out: the WAV files of {path} (real inputs)"
        return _generated_audio(derived.signature), ("held-out: generated noise and tones (weaker than your own "
                                                     "recordings, give --heldout DIR of WAV files)")
    if path is not None:
        return _text_file(path, derived), f"held-out: the lines of {path}, tokenised (real inputs)"
    return _generated_ids(derived), ("held-out: random token ids at every declared length (generated: weaker than "
                                     "your own sentences, give --heldout FILE.txt)")


def _cycled(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """At least MIN_HELDOUT rows (validation compares batches up to that size), repeating the given ones."""
    return [arrays[i % len(arrays)] for i in range(max(MIN_HELDOUT, len(arrays)))]


def _text_file(path: Path, derived: Derived) -> dict[str, np.ndarray]:
    from handlers.text_encoder import TextRequestEncoder

    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise CheckpointError(f"--heldout {path} holds no lines of text")
    settings = derived.task_settings
    encoder = TextRequestEncoder(derived.tokenizer, derived.signature, settings.get("window"),
                                 settings.get("doc_stride", 0))
    if derived.task == QUESTION_ANSWERING:
        pairs = [tuple(line.split("\t", 1)) for line in lines]
        if any(len(pair) != 2 for pair in pairs):
            raise CheckpointError(f"--heldout {path}: a question answering model takes lines of question<TAB>context")
        result = encoder.encode_pairs([list(pairs)], max_rows=10**6)[0]
        if not isinstance(result, tuple):
            raise CheckpointError(f"--heldout {path}: {result.message}")
        arrays = result[0]
    else:
        arrays = encoder.encode_texts([lines])[0][0]
    rows = _cycled(list(range(len(next(iter(arrays.values()))))))
    return {name: array[rows] for name, array in arrays.items()}


def _generated_ids(derived: Derived) -> dict[str, np.ndarray]:
    """Random ids over the whole vocabulary, every token real (the validation cuts and pads them per length)."""
    rng = np.random.default_rng(SEED)
    out = {}
    for spec in derived.signature.inputs:
        shape = (MIN_HELDOUT, *spec.fixed_shape())
        if spec.name == "input_ids":
            out[spec.name] = rng.integers(int(spec.min_value), int(spec.max_value) + 1, size=shape, dtype=np.int64)
        elif spec.name == "token_type_ids":  # a question then its context: the second half is sequence 1
            out[spec.name] = (np.arange(shape[1]) >= shape[1] // 2).astype(np.int64)[None].repeat(shape[0], 0)
        else:
            out[spec.name] = np.ones(shape, np.int64)
    return out


def _wav_folder(path: Path, signature: Signature) -> dict[str, np.ndarray]:
    (name, audio), = signature.audio.items()
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == WAV_SUFFIX) if path.is_dir() else []
    if not files:
        raise CheckpointError(f"--heldout {path} must be a folder of {WAV_SUFFIX} files (or an .npz) for an audio model")
    return _audio_arrays(signature, _cycled([audio.decode(p.read_bytes(), p.name) for p in files]))


def _generated_audio(signature: Signature) -> dict[str, np.ndarray]:
    """Noise and tones at the longest length (the validation cuts them to each length it tries)."""
    (name, audio), = signature.audio.items()
    rng = np.random.default_rng(SEED)
    t = np.arange(audio.max_samples) / audio.sampling_rate
    clips = []
    for idx in range(MIN_HELDOUT):
        tone = 0.3 * np.sin(2 * np.pi * TONE_HZ[idx % len(TONE_HZ)] * t)
        clips.append((tone + 0.05 * rng.standard_normal(audio.max_samples)).astype(np.float32))
    return _audio_arrays(signature, clips)


def _audio_arrays(signature: Signature, clips: list[np.ndarray]) -> dict[str, np.ndarray]:
    (name, audio), = signature.audio.items()
    samples, mask = pad_clips([clip[:audio.max_samples] for clip in clips])
    arrays = {name: samples, "attention_mask": mask}
    return {spec.name: arrays[spec.name] for spec in signature.inputs}


def trace_examples(heldout: Mapping[str, np.ndarray], signature: Signature) -> dict[str, np.ndarray]:
    """The batch to trace with: held-out rows at the trace length, the second one shorter and padded, so code that
    branches on padding (attention masks) is traced on the branch a served batch takes."""
    spec = ExportSpec.of(signature)
    length = spec.trace_length()
    rows = validation_batch(heldout, signature, TRACE_BATCH, length)
    if length is not None:
        for spec_in, array in zip(signature.inputs, rows):
            dims = [pos for pos, d in enumerate(spec_in.shape) if isinstance(d, Range)]
            if dims and spec_in.name in ("attention_mask",) and array[1].all():
                array[1, max(1, length // 2):] = 0  # make sure one row is padded
    return dict(zip(signature.names, rows))
