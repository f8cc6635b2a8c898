"""Train a demo model on the digits split; print and save its held-out accuracy."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from handlers.backends.threads import intra_op_threads
from servekit.examples.data import DigitsSplit
from servekit.examples.models import DemoModel

TRAIN_SEED = 0
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
# torch splits its reductions by thread count, so the trained weights depend on it: a fixed count makes
# the demo models the same on every machine (1 core or many) and whatever ran before in the process.
# 2 is what the development machine used by default, so the documented figures are these models'.
TRAIN_THREADS = 2


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on numpy inputs already shaped for it."""
    model.eval()
    with torch.inference_mode():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def train_demo(spec: DemoModel, split: DigitsSplit, out_dir: Path) -> dict:
    """Train ``spec`` from a fixed seed; write weights.pt and metrics.json into ``out_dir``."""
    with intra_op_threads(TRAIN_THREADS):
        return _train(spec, split, out_dir)


def _train(spec: DemoModel, split: DigitsSplit, out_dir: Path) -> dict:
    torch.manual_seed(TRAIN_SEED)
    model = spec.factory()
    x_train = split.x_train.reshape(-1, *spec.input_shape)
    x_test = split.x_test.reshape(-1, *spec.input_shape)
    features, targets = torch.from_numpy(x_train), torch.from_numpy(split.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(TRAIN_SEED)
    started = time.perf_counter()
    for _ in range(spec.epochs):
        model.train()
        for batch in torch.randperm(len(features), generator=generator).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss_fn(model(features[batch]), targets[batch]).backward()
            optimizer.step()
        scheduler.step()
    metrics = {
        "model": spec.name,
        "test_accuracy": accuracy(model, x_test, split.y_test),
        "train_accuracy": accuracy(model, x_train, split.y_train),
        "test_samples": int(len(split.y_test)),
        "epochs": spec.epochs,
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "weights.pt")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
