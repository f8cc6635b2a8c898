"""Compositions for tests: the real members plus a slow one and a broken one, built and archived."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

from handlers.config import PROBABILITIES
from servekit.examples.composition import MEMBER_CONTRACT, Composition, build_composed, build_workflow, member_dir
from servekit.examples.data import LABELS
from servekit.build.export import ONNX_FILE, ExportSpec, export_onnx
from servekit.build.model_dir import seal
from servekit.build.model_config import MODEL_CONFIG_FILE, Batching, model_config, write_model_config

TEST_TIMEOUT_MS = 200
SLOW = Composition("ensemble_with_slow", {"mlp": 1.0, "slow": 1.0})
BROKEN = Composition("ensemble_with_broken", {"mlp": 1.0, "broken": 1.0})


class SlowNet(nn.Module):
    """Seconds of convolution per image (upsampled to 1536x1536): far past the 200 ms test deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.head = nn.Conv2d(1, 32, 5), nn.Conv2d(32, 32, 5), nn.Linear(32, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = functional.interpolate(image.unsqueeze(1), size=(1536, 1536))
        return self.head(self.conv2(self.conv1(x)).mean(dim=(2, 3)))


class BrokenNet(nn.Module):
    """Answers 7 classes where the ensemble expects 10: a member built for another label set."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 7)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.linear(image.reshape(image.shape[0], 64))


def build_faulty_members(build_dir: Path, batching: Batching) -> list[Path]:
    """member_slow and member_broken directories (ONNX + model-config.yaml answering probabilities)."""
    dirs = []
    for name, model in (("slow", SlowNet()), ("broken", BrokenNet())):
        out = member_dir(build_dir, name)
        out.mkdir(parents=True, exist_ok=True)
        export_onnx(model.eval(), ExportSpec(MEMBER_CONTRACT.name, MEMBER_CONTRACT.shape), out / ONNX_FILE)
        write_model_config(out / MODEL_CONFIG_FILE, model_config(MEMBER_CONTRACT, LABELS, batching, output=PROBABILITIES))
        seal(out, {"note": "a deliberately faulty test member: vouched for, never validated"})
        dirs.append(out)
    return dirs


def build_faulty_compositions(build_dir: Path, batching: Batching) -> list[Path]:
    """The slow and broken members, and each composition with them both ways (200 ms deadline)."""
    dirs = build_faulty_members(build_dir, batching)
    for composition in (SLOW, BROKEN):
        dirs.append(build_composed(composition, build_dir, batching, TEST_TIMEOUT_MS))
        dirs.append(build_workflow(composition, build_dir, batching, TEST_TIMEOUT_MS))
    return dirs
