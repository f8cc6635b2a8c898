"""Request bodies to load a model with: the user's files, or generated from its signature (photos for an
image model, sentences of realistic lengths through its tokenizer for a text model, random arrays else)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handlers.config import HandlerConfig
from handlers.errors import ConfigError

CONTENT_TYPES = {".json": "application/json", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                 ".npy": "application/x-npy", ".txt": "text/plain"}
GENERATED_COUNT = 64
BODY_SEED = 0
# Sentence lengths in tokens: lognormal around a median of 24, as user text is (a few long ones, most short).
MEDIAN_TOKENS, TOKEN_SIGMA = 24, 0.6
MAX_RANDOM_LENGTH = 100_000  # random arrays: each dynamic dimension is then clipped to its own range


@dataclass(frozen=True)
class Bodies:
    """Files to POST in turn, their one content type, and where they came from."""

    paths: tuple[Path, ...]
    content_type: str
    description: str


def user_bodies(directory: Path) -> Bodies:
    """Every file of ``directory`` with a known suffix; they must share one content type."""
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in CONTENT_TYPES)
    types = {CONTENT_TYPES[p.suffix.lower()] for p in files}
    if not files or len(types) != 1:
        raise ConfigError(f"{directory} must hold request bodies of one kind ({', '.join(sorted(CONTENT_TYPES))}); "
                          f"found {len(files)} file(s) of {sorted(types) or 'no known'} type(s)")
    return Bodies(tuple(files), types.pop(), f"{len(files)} file(s) from {directory}")


def generated_bodies(document: dict[str, Any], tokenizer: Path | None, out_dir: Path,
                     count: int = GENERATED_COUNT, seed: int = BODY_SEED) -> Bodies:
    """Bodies from the model's signature, written under ``out_dir``."""
    signature = HandlerConfig.from_model_yaml(document).signature
    out_dir.mkdir(parents=True, exist_ok=True)
    if signature.images:
        from servekit.build.images import encode, sample_photos

        photos = [encode(photo) for photo in sample_photos()]
        return Bodies(_write(out_dir, "photo", ".jpg", photos), "image/jpeg",
                      f"{len(photos)} photos, 640x427 JPEG (scikit-learn's samples)")
    rng = np.random.default_rng(seed)
    if tokenizer is not None:
        texts = realistic_texts(tokenizer, count, seed)
        return Bodies(_write(out_dir, "text", ".json", [json.dumps({"text": t}).encode() for t in texts]),
                      "application/json", f"{count} sentences of lognormal length (median {MEDIAN_TOKENS} tokens)")
    bodies = []
    for length in token_lengths(count, MAX_RANDOM_LENGTH, seed):
        arrays = {spec.name: _random_instance(rng, spec, int(length)) for spec in signature.inputs}
        if signature.single is not None:
            bodies.append(json.dumps({"data": next(iter(arrays.values())).tolist()}).encode())
        else:
            bodies.append(json.dumps({"inputs": {name: a.tolist() for name, a in arrays.items()}}).encode())
    return Bodies(_write(out_dir, "instance", ".json", bodies), "application/json",
                  f"{count} random instances within the signature")


def token_lengths(count: int, high: int, seed: int = BODY_SEED) -> np.ndarray:
    """``count`` lengths, lognormal around MEDIAN_TOKENS, within 2..``high``."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(np.log(MEDIAN_TOKENS), TOKEN_SIGMA, count)), 2, high).astype(int)


def realistic_texts(tokenizer: Path, count: int, seed: int = BODY_SEED, high: int = 128) -> list[str]:
    """Sentences of the tokenizer's own words (one token each, as WordLevel and whole-word WordPiece tokens are),
    of lognormal lengths; ``[CLS]``-style special tokens are never used as words."""
    from tokenizers import Tokenizer

    vocabulary = sorted(word for word in Tokenizer.from_file(str(tokenizer)).get_vocab()
                        if word.isalpha() and word.islower())
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(vocabulary, size=int(n) - 1)) for n in token_lengths(count, high, seed)]


def _random_instance(rng: np.random.Generator, spec, length: int) -> np.ndarray:
    """One instance; dynamic dimensions at ``length`` (within their range), shared by every input."""
    shape = tuple(d if isinstance(d, int) else int(np.clip(length, d.low, d.high)) for d in spec.shape)
    if np.dtype(spec.dtype).kind in "iub":
        high = 1 if spec.max_value is None else int(spec.max_value)
        return rng.integers(int(spec.min_value or 0), high + 1, size=shape)
    low = 0.0 if spec.min_value is None else spec.min_value
    high = 1.0 if spec.max_value is None else spec.max_value
    return rng.uniform(low, high, size=shape).round(4)


def _write(out_dir: Path, stem: str, suffix: str, bodies: list[bytes]) -> tuple[Path, ...]:
    paths = []
    for idx, body in enumerate(bodies):
        path = out_dir / f"{stem}_{idx:03d}{suffix}"
        path.write_bytes(body)
        paths.append(path)
    return tuple(paths)
