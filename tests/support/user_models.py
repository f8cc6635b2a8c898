"""Models a user might bring, importable as 'support.user_models:NAME' in tests."""
from __future__ import annotations

import torch
from torch import nn


class Branchy(nn.Module):
    """Data-dependent control flow: tracing bakes in one branch, so the export is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return self.linear(x) * 2
        return self.linear(x)


def tiny_classifier() -> nn.Module:
    """A small seeded 4 -> 3 classifier."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def branchy() -> nn.Module:
    torch.manual_seed(0)
    return Branchy()


def not_a_module() -> object:
    return object()


class ItemScaled(nn.Module):
    """Reads a tensor value into Python: tracing bakes it (right here, it is always true), torch.export refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 2.0 if float(x.abs().max()) >= 0 else 1.0
        return self.linear(x) * scale


def item_scaled() -> nn.Module:
    torch.manual_seed(0)
    return ItemScaled()
