"""Reference predictions for tests."""
from __future__ import annotations

import numpy as np
import torch


def eager_predictions(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Argmax of the eager PyTorch model."""
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x))).argmax(dim=1).numpy()
