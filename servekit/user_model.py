"""Bring your own model: import ``package.module:factory``, load weights, find held-out inputs."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from handlers.signature import InputSpec, Signature

RANDOM_INPUT_SEED = 0
RANDOM_INPUT_COUNT = 64


class UserModelError(ValueError):
    """The model reference, weights or inputs given on the command line are unusable."""


def load_user_model(reference: str, weights: Path | None = None) -> nn.Module:
    """``'pkg.mod:factory'`` -> ``factory()`` in eval mode, with ``weights`` (a state_dict) loaded."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise UserModelError(f"model reference {reference!r} must look like 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserModelError(f"cannot import {reference!r}: {err}") from err
    model = factory()
    if not isinstance(model, nn.Module):
        raise UserModelError(f"{reference!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        if not weights.exists():
            raise UserModelError(f"weights file {weights} does not exist")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


def heldout_inputs(path: Path | None, signature: Signature) -> dict[str, np.ndarray]:
    """Held-out inputs by name: an .npy (one-input models) or an .npz with one array per input, or
    seeded random ones within each input's declared range (the longest length on dynamic dimensions)."""
    if path is not None:
        return _heldout_from_file(path, signature)
    rng = np.random.default_rng(RANDOM_INPUT_SEED)
    return {spec.name: _random_input(rng, spec) for spec in signature.inputs}


def _heldout_from_file(path: Path, signature: Signature) -> dict[str, np.ndarray]:
    if not path.exists():
        raise UserModelError(f"held-out file {path} does not exist")
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        if signature.single is None:
            raise UserModelError(f"{path} is one array; a model with inputs {list(signature.names)} needs an .npz "
                                 "with one array per input")
        arrays = {signature.single.name: loaded}
    else:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    missing = [name for name in signature.names if name not in arrays]
    if missing:
        raise UserModelError(f"{path} holds {sorted(arrays)}; the model's inputs are {list(signature.names)}")
    out = {}
    for spec in signature.inputs:
        array = arrays[spec.name]
        fits = array.ndim == len(spec.shape) + 1 and all(
            size == d if isinstance(d, int) else d.low <= size <= d.high for size, d in zip(array.shape[1:], spec.shape))
        if not fits:
            raise UserModelError(f"{path}: '{spec.name}' has shape {list(array.shape)}; expected [N, "
                                 f"{', '.join(str(d) for d in spec.shape)}]")
        if np.dtype(spec.dtype).kind != "f" and array.dtype.kind == "f":
            raise UserModelError(f"{path}: '{spec.name}' holds floats; the input is {spec.dtype}")
        out[spec.name] = array.astype(spec.dtype)
    return out


def _random_input(rng: np.random.Generator, spec: InputSpec) -> np.ndarray:
    shape = (RANDOM_INPUT_COUNT, *spec.fixed_shape())
    low, high = spec.min_value, spec.max_value
    if np.dtype(spec.dtype).kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.dtype(spec.dtype).kind in "iu":
        # Without a declared range only 0 and 1 are safe for any integer input (ids, masks).
        return rng.integers(int(low or 0), int(high if high is not None else 1) + 1, size=shape).astype(spec.dtype)
    if low is not None and high is not None:
        return rng.uniform(low, high, size=shape).astype(spec.dtype)
    return rng.standard_normal(shape).astype(spec.dtype)
