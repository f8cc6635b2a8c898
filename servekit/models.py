"""Demo models for the digits data: an MLP and a small CNN."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """64 pixels -> 10 logits."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 10)
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels)


class DigitsCNN(nn.Module):
    """1x8x8 image -> 10 logits."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels * 2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels * 2 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


@dataclass(frozen=True)
class DemoModel:
    """A demo model's factory, input name and per-instance input shape."""

    name: str
    factory: Callable[[], nn.Module]
    input_name: str
    input_shape: tuple[int, ...]
    epochs: int


DEMO_MODELS = {
    "digits_mlp": DemoModel("digits_mlp", DigitsMLP, "pixels", (64,), epochs=60),
    "digits_cnn": DemoModel("digits_cnn", DigitsCNN, "image", (1, 8, 8), epochs=40),
}
