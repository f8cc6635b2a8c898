"""Build one model directory: validated exports plus model-config.yaml, ready for archive.sh."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from handlers.contract import PREDICTIONS, InputContract
from servekit import validate
from servekit.export import FORMATS, ExportSpec, export_and_validate
from servekit.model_config import MODEL_CONFIG_FILE, Batching, model_config, write_model_config

VALIDATION_FILE = "validation.json"


@dataclass(frozen=True)
class ModelBuild:
    """Everything needed to turn an ``nn.Module`` into an archivable directory."""

    name: str
    contract: InputContract
    labels: Sequence[str]
    batching: Batching = Batching()
    top_k: int = 3
    output: str = PREDICTIONS
    formats: tuple[str, ...] = FORMATS


def build_model_dir(model: nn.Module, build: ModelBuild, heldout: np.ndarray, out_dir: Path,
                    rtol: float = validate.DEFAULT_RTOL, atol: float = validate.DEFAULT_ATOL) -> Path:
    """Export, validate (raises ExportValidationError), write model-config.yaml and validation.json.

    A format torch cannot capture (today only model.pt2) is skipped with torch's reason, printed and
    kept in validation.json under ``unsupported``; the other formats still build.
    """
    spec = ExportSpec(build.contract.name, build.contract.shape)
    exported = export_and_validate(model, spec, out_dir, heldout, rtol=rtol, atol=atol, formats=build.formats,
                                   progress=lambda message: print(f"  {message}", flush=True))
    for comparisons in exported.comparisons.values():
        for comparison in comparisons:
            print(f"  {comparison.describe()}")
    for fmt, reason in exported.unsupported.items():
        print(f"  {fmt:<12} SKIPPED: {reason}")
    write_model_config(out_dir / MODEL_CONFIG_FILE,
                       model_config(build.contract, build.labels, build.batching, top_k=build.top_k, output=build.output))
    report = {"rtol": rtol, "atol": atol, **{k: validate.comparisons_as_json(v) for k, v in exported.comparisons.items()},
              "unsupported": exported.unsupported}
    (out_dir / VALIDATION_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return out_dir
