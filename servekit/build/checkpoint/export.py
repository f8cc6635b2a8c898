"""``servekit export --transformers DIR``: from a ``save_pretrained`` folder to a validated model directory in one
call, every derived item said in one line."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from servekit.build.checkpoint.derive import CheckpointOptions, Derived, derive
from servekit.build.checkpoint.heldout import heldout_for, trace_examples
from servekit.build.export import FORMATS
from servekit.build.model_config import Batching
from servekit.build.model_dir import ModelBuild
from servekit.build.options import DEFAULT_BUILD_DIR, export_build, parse_formats
from servekit.build.validate import DEFAULT_ATOL, DEFAULT_RTOL

SINGLE_REQUEST = {"batch_size": 1}  # models whose answers change when padded (group-norm audio)


@dataclass(frozen=True)
class TransformersOptions:
    """Everything ``servekit export --transformers`` takes, with the CLI's defaults."""

    folder: Path
    name: str | None = None  # default: the folder's name
    checkpoint: CheckpointOptions = field(default_factory=CheckpointOptions)
    heldout: Path | None = None
    formats: str = ",".join(FORMATS)
    batching: Batching = field(default_factory=Batching)
    build_dir: Path = DEFAULT_BUILD_DIR
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL


def checkpoint_build(options: TransformersOptions, say: Callable[[str], None] = print
                     ) -> tuple[Derived, ModelBuild, dict]:
    """Derive everything from the folder (saying each item) and the held-out data: the model, its build, its data."""
    derived = derive(options.folder, options.checkpoint)
    for line in derived.lines:
        say(f"  {line}")
    heldout, where = heldout_for(derived, options.heldout)
    say(f"  {where}")
    task = {"task": derived.task, **derived.task_settings}
    batching = options.batching
    if derived.single_request_batches:
        batching = replace(batching, **SINGLE_REQUEST)
        task["max_instances"] = 1
    build = ModelBuild(options.name or options.folder.resolve().name, derived.signature, derived.labels, batching,
                       task=task, tokenizer=derived.tokenizer, formats=parse_formats(options.formats),
                       examples=trace_examples(heldout, derived.signature))
    return derived, build, heldout


def export_transformers(options: TransformersOptions) -> Path:
    """Derive, export every format, validate each against the eager model; returns the model directory."""
    print(f"reading {options.folder} (transformers save_pretrained folder)")
    with quiet_transformers():
        derived, build, heldout = checkpoint_build(options)
        return export_build(derived.wrapper, build, heldout, options.build_dir, options.rtol, options.atol)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' code warns while it is traced (Python bools from tensor shapes) and logs notes on loading;
    the validation that follows every format is what proves the trace, so the console keeps our lines only."""
    import torch

    from servekit.build.optimize.quantize import _quiet_torchao_import

    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        # transformers imports torchao, whose CUDA kernels fail to load on a CPU wheel (logged per file)
        with _quiet_torchao_import(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")  # ONNX: indices are never negative here
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            yield
    finally:
        transformers_logging.set_verbosity(level)
        transformers_logging.enable_progress_bar()
