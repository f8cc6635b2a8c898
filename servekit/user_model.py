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

from servekit.validate import DEFAULT_BATCH_SIZES

RANDOM_INPUT_SEED = 0
RANDOM_INPUT_COUNT = 64
MIN_HELDOUT = max(DEFAULT_BATCH_SIZES)


class UserModelError(ValueError):
    """The model reference, weights or inputs given on the command line are unusable."""


def load_user_model(reference: str, weights: Path | None = None) -> nn.Module:
    """``'pkg.mod:factory'`` -> ``factory()`` in eval mode, with ``weights`` (a state_dict) loaded."""
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


def heldout_inputs(path: Path | None, input_shape: tuple[int, ...], low: float | None, high: float | None) -> np.ndarray:
    """Held-out inputs from an .npy file, or seeded random ones within the declared range."""
    if path is not None:
        data = load_npy(path).astype(np.float32)
        if tuple(data.shape[1:]) != input_shape:
            raise UserModelError(f"{path} has shape {list(data.shape)}; expected [N, {', '.join(map(str, input_shape))}]")
        if len(data) < MIN_HELDOUT:
            raise UserModelError(f"{path} holds {len(data)} held-out inputs; validation needs at least {MIN_HELDOUT} "
                                 f"(it compares batches of {', '.join(map(str, DEFAULT_BATCH_SIZES))})")
        return data
    rng = np.random.default_rng(RANDOM_INPUT_SEED)
    if low is not None and high is not None:
        return rng.uniform(low, high, size=(RANDOM_INPUT_COUNT, *input_shape)).astype(np.float32)
    return rng.standard_normal((RANDOM_INPUT_COUNT, *input_shape)).astype(np.float32)


def load_npy(path: Path) -> np.ndarray:
    """An .npy file of plain numbers (never unpickled), or a UserModelError that says what is wrong with it."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserModelError(f"{path} does not exist") from None
    except (ValueError, OSError) as err:
        raise UserModelError(f"{path} is not a readable .npy array of numbers: {err}") from None
