"""Bring your own model: import ``package.module:factory``, load weights, find held-out inputs."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

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


def heldout_inputs(path: Path | None, input_shape: tuple[int, ...], low: float | None, high: float | None) -> np.ndarray:
    """Held-out inputs from an .npy file, or seeded random ones within the declared range."""
    if path is not None:
        data = np.load(path, allow_pickle=False).astype(np.float32)
        if tuple(data.shape[1:]) != input_shape:
            raise UserModelError(f"{path} has shape {list(data.shape)}; expected [N, {', '.join(map(str, input_shape))}]")
        return data
    rng = np.random.default_rng(RANDOM_INPUT_SEED)
    if low is not None and high is not None:
        return rng.uniform(low, high, size=(RANDOM_INPUT_COUNT, *input_shape)).astype(np.float32)
    return rng.standard_normal((RANDOM_INPUT_COUNT, *input_shape)).astype(np.float32)
