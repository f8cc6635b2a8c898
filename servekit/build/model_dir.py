"""Build one model directory: validated exports plus model-config.yaml, ready for archive.sh.

The directory is written atomically as far as archive.sh can tell: everything is exported, checked and
configured in a staging folder beside it, and moved in only when every check passed. ``validation.json``
is written last and vouches for the exact artifacts (their sha256); archive.sh refuses a directory
whose files it does not vouch for.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from handlers.config import PREDICTIONS
from handlers.errors import ConfigError
from handlers.signature import InputSpec, Signature
from servekit.build import validate
from servekit.build.export import AOTI_FILE, FORMATS, ONNX_FILE, TORCHSCRIPT_FILE, ExportSpec, export_and_validate
from servekit.build.model_config import MODEL_CONFIG_FILE, Batching, model_config, write_model_config

VALIDATION_FILE = "validation.json"
TOKENIZER_FILE = "tokenizer.json"  # archive.sh ships it inside the .mar
ARTIFACTS_KEY = "artifacts"  # validation.json: file name -> sha256 of every file archive.sh packs
ARTIFACT_FILES = (TORCHSCRIPT_FILE, ONNX_FILE, AOTI_FILE, MODEL_CONFIG_FILE, TOKENIZER_FILE)


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
    examples: Mapping[str, np.ndarray] | None = None  # real inputs to trace with (see ExportSpec.examples)

    @property
    def signature(self) -> Signature:
        """The model's signature."""
        return self.contract if isinstance(self.contract, Signature) else Signature((self.contract,))


def build_model_dir(model: nn.Module, build: ModelBuild, heldout: np.ndarray | dict[str, np.ndarray], out_dir: Path,
                    rtol: float = validate.DEFAULT_RTOL, atol: float = validate.DEFAULT_ATOL) -> Path:
    """Export, validate (raises ExportValidationError), write model-config.yaml and validation.json
    (and copy the tokenizer, checked against the signature first).

    A failed check leaves ``out_dir`` exactly as it was (a previous good export stays servable). A
    format torch cannot capture (today only model.pt2) is skipped with torch's reason, printed and
    kept in validation.json under ``unsupported``; the other formats still build.
    """
    task = dict(build.task)
    if build.tokenizer is not None:
        from handlers.text_encoder import TextEncoder

        TextEncoder(build.tokenizer, build.signature)  # a tokenizer that cannot feed these inputs fails here
        task["tokenizer"] = TOKENIZER_FILE
    spec = ExportSpec.of(build.signature, examples=build.examples)
    # The settings first (a wrong one is refused before anything is exported), then the labels against the model.
    config = model_config(build.signature, build.labels, build.batching, top_k=build.top_k, output=build.output, **task)
    check_label_count(model, spec, build.labels, probe(model, spec))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Beside out_dir, so the moves below are renames on one filesystem; a dot keeps archive.sh's glob off it.
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent) as staging_dir:
        staging = Path(staging_dir)
        exported = export_and_validate(model, spec, staging, heldout, rtol=rtol, atol=atol, formats=build.formats,
                                       progress=lambda message: print(f"  {message}", flush=True))
        for comparisons in exported.comparisons.values():
            for comparison in comparisons:
                print(f"  {comparison.describe()}")
        for fmt, reason in exported.unsupported.items():
            print(f"  {fmt:<12} SKIPPED: {reason}")
        padding = validate.check_padding_invariance(validate.eager_runner(model), _named(heldout, spec),
                                                    build.signature, rtol, atol)
        if padding is not None:
            print(f"  {padding.describe()}")
            config["handler"]["padding_invariant"] = padding.invariant  # not invariant: equal-length sub-batches only
        write_model_config(staging / MODEL_CONFIG_FILE, config)
        if build.tokenizer is not None:
            shutil.copyfile(build.tokenizer, staging / TOKENIZER_FILE)
        report = {"rtol": rtol, "atol": atol,
                  **{k: validate.comparisons_as_json(v) for k, v in exported.comparisons.items()},
                  "unsupported": exported.unsupported,
                  **({} if padding is None else {"padding": asdict(padding)})}
        _move_into_place(staging, out_dir, report)
    return out_dir


def _named(heldout: np.ndarray | dict[str, np.ndarray], spec: ExportSpec) -> dict[str, np.ndarray]:
    """Held-out data as input name -> array (one bare array belongs to a one-input model)."""
    if isinstance(heldout, np.ndarray):
        return {spec.input_name: heldout.reshape(-1, *spec.input_shape).astype(np.float32)}
    return heldout


def probe(model: nn.Module, spec: ExportSpec) -> object:
    """Run the model once on a dummy batch of the declared inputs; a model that cannot take them is a one-line
    ConfigError naming the declared inputs and torch's complaint (a wrong --input shape was exit 1 with
    "unexpected RuntimeError: mat1 and mat2 shapes cannot be multiplied")."""
    model.eval()
    example = spec.example()
    try:
        with torch.inference_mode():
            return model(*example) if isinstance(example, tuple) else model(example)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        declared = ", ".join(f"{s.name}: {s.dtype} [N, {', '.join(map(str, s.shape))}]" for s in spec.signature.inputs)
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ConfigError(f"the model does not take the declared inputs ({declared}): {type(err).__name__}: "
                          f"{first}; check --input / --input-shape against forward()") from None


def check_label_count(model: nn.Module, spec: ExportSpec, labels: Sequence[str], output: object = None) -> None:
    """One label per class the model answers, or none at all (then classes are named by index)."""
    if not labels:
        return
    if output is None:
        output = probe(model, spec)
    if not isinstance(output, torch.Tensor):
        return  # several outputs: labels name the classes of a classifier's one output
    classes = int(output.shape[-1])
    if len(labels) != classes:
        raise ConfigError(f"{len(labels)} labels given ({', '.join(labels)}) but the model answers {classes} "
                          f"classes (output shape {list(output.shape)}); give one label per class")


def _move_into_place(staging: Path, out_dir: Path, report: dict) -> None:
    out_dir.mkdir(exist_ok=True)
    # No voucher while the artifacts change: if this is interrupted, archive.sh refuses the directory.
    (out_dir / VALIDATION_FILE).unlink(missing_ok=True)
    for name in ARTIFACT_FILES:
        if (staging / name).exists():
            os.replace(staging / name, out_dir / name)
        else:  # a format not built this time must not be archived beside the new ones
            (out_dir / name).unlink(missing_ok=True)
    seal(out_dir, report)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(directory: Path, report: dict | None = None) -> Path:
    """Write validation.json: the checks' ``report`` (or the one already there) and the sha256 of every
    artifact now in ``directory``, which is what archive.sh compares before packing anything."""
    path = directory / VALIDATION_FILE
    if report is None:
        report = json.loads(path.read_text()) if path.exists() else {}
    hashes = {name: file_sha256(directory / name) for name in ARTIFACT_FILES if (directory / name).exists()}
    path.write_text(json.dumps({**report, ARTIFACTS_KEY: hashes}, indent=2) + "\n")
    return path
