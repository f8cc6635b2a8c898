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


def regressor() -> nn.Module:
    """13 features -> 1 number (a house price, say): seeded, no training needed to compare answers."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 1))


class TwoHeads(nn.Module):
    """Two named outputs: a scalar and a 2-vector per instance."""

    def __init__(self) -> None:
        super().__init__()
        self.price, self.range = nn.Linear(4, 1), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.price(x).squeeze(1), self.range(x)


def two_heads() -> nn.Module:
    torch.manual_seed(0)
    return TwoHeads()


def embedder() -> nn.Module:
    """8 features -> a 6-dimensional vector."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 6))


class MaskedMeanText(nn.Module):
    """int64 token ids + attention mask -> embedding -> masked mean -> 4 classes (padding never changes it)."""

    def __init__(self, vocab: int = 50, width: int = 8) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(self.embedding.weight.dtype)
        pooled = (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


def masked_mean_text() -> nn.Module:
    torch.manual_seed(0)
    return MaskedMeanText()


class BakedLength(nn.Module):
    """Divides by the sequence length as a Python number: tracing bakes in the length it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.embedding(input_ids).sum(1) / float(input_ids.shape[1])


def baked_length() -> nn.Module:
    torch.manual_seed(0)
    return BakedLength()


class UnmaskedWave(nn.Module):
    """A Wav2Vec2-like audio classifier without an attention mask: 1-D convolutions, then the mean over time.
    Zero-padding a short waveform to a batch-mate's length changes its mean, and so its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(1, 8, 10, stride=5), nn.GELU(), nn.Conv1d(8, 16, 3, stride=2), nn.GELU())
        self.head = nn.Linear(16, 5)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(waveform.unsqueeze(1)).mean(-1))


def unmasked_wave() -> nn.Module:
    torch.manual_seed(0)
    return UnmaskedWave()
class TwoInputs(nn.Module):
    """Two float inputs (a [6], b [4]) into one classifier of 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(6, 8), nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.a(a) + self.b(b)))


def two_inputs() -> nn.Module:
    torch.manual_seed(0)
    return TwoInputs().eval()


class IdsAndMask(nn.Module):
    """int64 ids and mask into an embedding and a linear layer; the mask becomes float32 inside forward, so
    a half-precision copy of this model cannot run (float32 x float16): its FP16 variant cannot be built."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.head = nn.Embedding(50, 16), nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).float()
        return self.head((self.embedding(ids) * weights).sum(1) / weights.sum(1).clamp(min=1))


def ids_and_mask() -> nn.Module:
    torch.manual_seed(0)
    return IdsAndMask().eval()
