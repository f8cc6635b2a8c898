"""Image classifiers for the image path: a tiny seeded one (tests, the reliability matrix) and a
ResNet-18 (our own code: the registry's torchvision does not load with our torch)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from servekit.build.options import ExportOptions, export_user_model

TINY_NAME = "tiny_vision"
TINY_LABELS = ("sky", "ground", "other")
TINY_CROP, TINY_RESIZE = 32, 40
TINY_MAX_PIXELS = 1_000_000
IMAGENET_MEAN, IMAGENET_STD = "0.485,0.456,0.406", "0.229,0.224,0.225"
# Seeded random weights: the tiny model proves mechanics, not accuracy (said with random_weights).
TINY_EXPORT = ExportOptions(factory="servekit.examples.vision:tiny_vision", random_weights=True, name=TINY_NAME,
                            task="classification",
                            labels=",".join(TINY_LABELS), inputs=(f"image:float32:3,{TINY_CROP},{TINY_CROP}",),
                            image_resize=TINY_RESIZE, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                            image_max_pixels=TINY_MAX_PIXELS)


def tiny_vision() -> nn.Module:
    """A seeded 3x32x32 -> 3 classes conv net; random weights prove mechanics, not accuracy."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(TINY_LABELS))).eval()


def export_tiny_vision(build_dir: Path, **changes: Any) -> Path:
    """``servekit export --factory servekit.examples.vision:tiny_vision --image-...`` into build_dir/tiny_vision;
    ``changes`` override export options (e.g. ``image_layout="HWC"``)."""
    return export_user_model(replace(TINY_EXPORT, build_dir=build_dir, **changes))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34's block)."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        # Two ReLU modules, not one used twice: torchao's PT2E quantizer matches conv + add + relu by module,
        # and one module at two places gave its partition two outputs ("Input partition has more than one
        # output node"), which ended `make images`. ReLU holds no weights: saved state dicts still load.
        self.relu = nn.ReLU(inplace=True)
        self.relu_out = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu_out(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2015; torchvision's layout): 11.7 M parameters at 1,000 classes, 1.8 GFLOPs at 224x224."""

    def __init__(self, num_classes: int = 1000, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, inputs = [], widths[0]
        for stage, width in enumerate(widths):
            stride = 1 if stage == 0 else 2
            layers += [BasicBlock(inputs, width, stride), BasicBlock(width, width, 1)]
            inputs = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inputs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


DIGITS_SIDE = 32  # the digits' 8x8 scans upscaled to 32x32 RGB images: trainable on 2 cores in about a minute


def digits_resnet18() -> nn.Module:
    """ResNet-18 with 10 classes, for the digits rendered as images (weights from ``servekit images``)."""
    torch.manual_seed(0)
    return ResNet18(num_classes=10).eval()


def resnet18_224() -> nn.Module:
    """ResNet-18 at 3x224x224 with 10 classes and seeded random weights: proves speed and mechanics only."""
    torch.manual_seed(0)
    return ResNet18(num_classes=10).eval()
