"""Global L1 unstructured pruning across every conv and linear weight, made permanent."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from servekit.build.defaults import DEFAULT_PRUNE_AMOUNT as DEFAULT_AMOUNT

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Sparsity:
    """Fraction of zero weights per layer and over all pruned weights."""

    per_layer: dict[str, float]
    global_fraction: float


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) for every conv/linear layer with a weight."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, PRUNABLE)]


def sparsity(model: nn.Module) -> Sparsity:
    """Measure zeros in every conv/linear weight."""
    per_layer, zeros, total = {}, 0, 0
    for name, module in prunable_weights(model):
        weight = module.weight
        layer_zeros = int((weight == 0).sum())
        per_layer[name] = layer_zeros / weight.numel()
        zeros, total = zeros + layer_zeros, total + weight.numel()
    return Sparsity(per_layer, zeros / total if total else 0.0)


def prune_global_l1(model: nn.Module, amount: float = DEFAULT_AMOUNT,
                    finetune: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """A pruned copy: the ``amount`` smallest-magnitude weights across all layers set to zero.

    ``finetune`` (optional) trains the copy while the pruning masks still hold, so pruned weights
    stay zero; ``prune.remove`` then makes the zeros permanent.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune amount must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(model)
    targets = [(module, "weight") for _, module in prunable_weights(pruned)]
    if not targets:
        raise ValueError("model has no conv or linear layers to prune")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    if finetune is not None:
        finetune(pruned)
    for module, name in targets:
        prune.remove(module, name)
    return pruned.eval()


def finetuner(x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 1e-3, batch_size: int = 64,
              seed: int = 0) -> Callable[[nn.Module], None]:
    """A short supervised fine-tune on (x, y), for recovering accuracy after pruning."""

    def run(model: nn.Module) -> None:
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(x), generator=generator).split(batch_size):
                optimizer.zero_grad()
                loss_fn(model(x[batch]), y[batch]).backward()
                optimizer.step()
        model.eval()

    return run
