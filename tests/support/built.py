"""What the session fixtures build (tests/conftest.py), in a module of its own so that a result built by
one pytest-xdist worker can be pickled for the others (support.shared)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handlers.config import InputContract


@dataclass(frozen=True)
class BuiltModel:
    """A demo model trained and exported into ``directory`` (model.pt, model.onnx, model-config.yaml)."""

    name: str
    directory: Path
    model: torch.nn.Module
    contract: InputContract
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class BertBuild:
    """The BERT-style text classifier trained, exported and its variants gated, as a user would run it."""

    task: object  # servekit.examples.text_model.TextTask
    build_dir: Path
    variants: list[dict]
