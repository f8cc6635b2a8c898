"""Build one model directory: validated exports plus model-config.yaml, ready for archive.sh."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from handlers.contract import PREDICTIONS
from handlers.signature import InputSpec, Signature
from servekit import validate
from servekit.export import FORMATS, ExportSpec, export_and_validate
from servekit.model_config import MODEL_CONFIG_FILE, Batching, model_config, write_model_config

VALIDATION_FILE = "validation.json"
TOKENIZER_FILE = "tokenizer.json"  # archive.sh ships it inside the .mar


@dataclass(frozen=True)
class ModelBuild:
    """Everything needed to turn an ``nn.Module`` into an archivable directory."""

    name: str
    contract: InputSpec | Signature  # one input (answering "logits"), or a whole signature
    labels: Sequence[str]
    batching: Batching = Batching()
    top_k: int = 3
    output: str = PREDICTIONS
    formats: tuple[str, ...] = FORMATS
    task: Mapping[str, Any] = field(default_factory=dict)  # task, multi_label, threshold, normalize
    tokenizer: Path | None = None  # a tokenizers tokenizer.json: the archive then also takes text

    @property
    def signature(self) -> Signature:
        """The model's signature."""
        return self.contract if isinstance(self.contract, Signature) else Signature((self.contract,))


def build_model_dir(model: nn.Module, build: ModelBuild, heldout: np.ndarray | dict[str, np.ndarray], out_dir: Path,
                    rtol: float = validate.DEFAULT_RTOL, atol: float = validate.DEFAULT_ATOL) -> Path:
    """Export, validate (raises ExportValidationError), write model-config.yaml and validation.json
    (and copy the tokenizer, checked against the signature first)."""
    task = dict(build.task)
    if build.tokenizer is not None:
        from handlers.text import TextEncoder

        TextEncoder(build.tokenizer, build.signature)  # a tokenizer that cannot feed these inputs fails here
        task["tokenizer"] = TOKENIZER_FILE
    spec = ExportSpec.of(build.signature)
    results = export_and_validate(model, spec, out_dir, heldout, rtol=rtol, atol=atol, formats=build.formats)
    for comparisons in results.values():
        for comparison in comparisons:
            print(f"  {comparison.describe()}")
    write_model_config(out_dir / MODEL_CONFIG_FILE,
                       model_config(build.signature, build.labels, build.batching, top_k=build.top_k, output=build.output,
                                    **task))
    if build.tokenizer is not None:
        shutil.copyfile(build.tokenizer, out_dir / TOKENIZER_FILE)
    report = {"rtol": rtol, "atol": atol, **{k: validate.comparisons_as_json(v) for k, v in results.items()}}
    (out_dir / VALIDATION_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return out_dir
