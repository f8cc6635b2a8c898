"""Models that are not the digits demo, exported through `servekit export --factory` as a user would."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from servekit.cli import main
from servekit.build.user_model import load_user_model

FORMATS = "torchscript,onnx"  # AOTInductor's compile is covered once, in test_aoti and the demo models
ARTIFACTS = ("model.pt", "model.onnx")  # what those exports hold
TEXT_INPUTS = ("--input", "input_ids:int64:1..16:0..49", "--input", "attention_mask:int64:1..16:0..1")


@dataclass(frozen=True)
class AnyModel:
    """How one model is exported: its factory in support.user_models and the export options."""

    name: str
    factory: str
    options: tuple[str, ...]

    def load(self) -> torch.nn.Module:
        """The same eager model the export saw (seeded factories, no weights file)."""
        return load_user_model(f"support.user_models:{self.factory}", random_weights=True)


ANY_MODELS = {
    "regressor": AnyModel("regressor", "regressor", ("--task", "regression", "--input", "features:float32:13",
                                                     "--output", "price")),
    "two_heads": AnyModel("two_heads", "two_heads", ("--task", "regression", "--input", "x:float32:4",
                                                     "--output", "price", "--output", "range")),
    "embedder": AnyModel("embedder", "embedder", ("--task", "embedding", "--normalize", "--input", "x:float32:8",
                                                  "--output", "vector")),
    "text": AnyModel("text", "masked_mean_text", ("--task", "classification", "--labels", "w,x,y,z",
                                                  *TEXT_INPUTS)),
}


def export_any_model(model: AnyModel, build_dir: Path) -> Path:
    """``servekit export --factory ...`` into ``build_dir/NAME``; fails the test if the export fails."""
    status = main(["export", "--factory", f"support.user_models:{model.factory}", "--random-weights", "--name", model.name,
                   *model.options, "--batch-size", "16", "--max-batch-delay", "20", "--build-dir", str(build_dir),
                   "--formats", FORMATS])
    assert status == 0, f"export of {model.name} failed"
    return build_dir / model.name
