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


class DigitsLinear(nn.Module):
    """64 pixels -> 10 logits with one linear layer (multinomial logistic regression)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.linear(pixels)


class ImageInput(nn.Module):
    """Adapts a member to the composition's common input, an ``[N, 8, 8]`` image in [0, 1]."""

    def __init__(self, model: nn.Module, member_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.member_shape = tuple(member_shape)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image.reshape((image.shape[0],) + self.member_shape))


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
# The ensemble's third member, of another kind: a linear model (served only as a member).
DIGITS_LINEAR = DemoModel("digits_linear", DigitsLinear, "pixels", (64,), epochs=60)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class BenchCNN(nn.Module):
    """A compute-bound ResNet-style CNN for 3x64x64 inputs; random weights (only speed matters)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            _ResidualBlock(width),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU(),
            _ResidualBlock(width * 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width * 2, 10),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


BENCH_CNN_SHAPE = (3, 64, 64)
