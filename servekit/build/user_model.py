"""Bring your own model: import ``package.module:factory``, load weights, find held-out inputs."""
from __future__ import annotations

import importlib
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from handlers.signature import InputSpec, Signature
from servekit.build.validate import DEFAULT_BATCH_SIZES

RANDOM_INPUT_SEED = 0
RANDOM_INPUT_COUNT = 64
MIN_HELDOUT = max(DEFAULT_BATCH_SIZES)


class UserModelError(ValueError):
    """The model reference, weights or inputs given on the command line are unusable."""


def load_user_model(reference: str, weights: Path | None = None, random_weights: bool = False) -> nn.Module:
    """``'pkg.mod:factory'`` -> ``factory()`` in eval mode, with ``weights`` (a state_dict) loaded.

    Without ``weights`` the factory's own (random) initialisation would be exported and served as if
    trained, so it is refused unless ``random_weights`` says that is meant (a smoke test, a benchmark).
    """
    if weights is None and not random_weights:
        raise UserModelError("--weights is missing: without it the model keeps its random initialisation; give "
                             "--weights STATE_DICT.pt, or --random-weights if untrained weights are what you mean")
    if weights is not None and random_weights:
        raise UserModelError("give --weights or --random-weights, not both")
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise UserModelError(f"model reference {reference!r} must look like 'package.module:factory'")
    search_current_folder()
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserModelError(f"cannot import {reference!r} (from {Path.cwd()} or sys.path): {err}") from err
    model = factory()
    if not isinstance(model, nn.Module):
        raise UserModelError(f"{reference!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        if not weights.exists():
            raise UserModelError(f"weights file {weights} does not exist")
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (RuntimeError, pickle.UnpicklingError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserModelError(f"weights file {weights} is not a state_dict of {reference!r}: {first}") from None
    return model.eval()


def search_current_folder() -> None:
    """Import from the current folder first, as ``python -m`` does (a console script starts with its
    own bin folder on sys.path instead, so a package beside the user was not found)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def heldout_inputs(path: Path | None, signature: Signature) -> dict[str, np.ndarray]:
    """Held-out inputs by name: an .npy (one-input models) or an .npz with one array per input, or
    seeded random ones within each input's declared range (the longest length on dynamic dimensions)."""
    if path is not None:
        return _heldout_from_file(path, signature)
    rng = np.random.default_rng(RANDOM_INPUT_SEED)
    return {spec.name: _random_input(rng, spec) for spec in signature.inputs}


def _heldout_from_file(path: Path, signature: Signature) -> dict[str, np.ndarray]:
    loaded = load_npy(path)
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
        if len(array) < MIN_HELDOUT:
            raise UserModelError(f"{path} holds {len(array)} held-out inputs; validation needs at least {MIN_HELDOUT} "
                                 f"(it compares batches of {', '.join(map(str, DEFAULT_BATCH_SIZES))})")
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


def load_npy(path: Path) -> np.ndarray | np.lib.npyio.NpzFile:
    """An .npy (or .npz) file of plain numbers (never unpickled), or a UserModelError that says what is wrong."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserModelError(f"{path} does not exist") from None
    except (ValueError, OSError) as err:
        raise UserModelError(f"{path} is not a readable .npy/.npz array of numbers: {err}") from None
