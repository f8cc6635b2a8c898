"""The archives and request bodies a benchmark run serves: ours, the plain baseline, the no-op ceiling."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handlers.config import InputContract
from servekit.build.archiving import run_archive_sh
from servekit.build.model_dir import ModelBuild, build_model_dir, seal
from servekit.serve.client import npy_bytes
from servekit.examples.data import LABELS
from servekit.build.export import AOTI_FILE, FORMATS
from servekit.build.model_config import Batching
from servekit.examples.models import BENCH_CNN_SHAPE, BenchCNN

REFERENCE_HANDLERS = Path(__file__).resolve().parent / "reference_handlers"
BENCH_SEED = 0


@dataclass(frozen=True)
class BenchModel:
    """One model's archives (by handler kind) and one-instance request bodies (by encoding)."""

    name: str
    archives: dict[str, str]        # "ours_ts", "ours_onnx", "ours_aoti", "plain_ts", "noop" -> .mar file name
    bodies: dict[str, Path]         # "json", "npy" -> body file
    model_dir: Path
    instance: np.ndarray


def _archiver() -> str:
    return str(Path(sys.executable).parent / "torch-model-archiver")


def archive_reference(name: str, handler: Path, store: Path, serialized: Path | None, threads: int = 0,
                      extra_files: tuple[Path, ...] = ()) -> str:
    """Archive a reference handler directly with torch-model-archiver (they are not our product).

    ``threads``: written as ``handler.threads`` into a model-config.yaml of its own, which the docs-style
    handlers pass to ``torch.set_num_threads`` (0: torch's default, every core)."""
    command = [_archiver(), "--model-name", name, "--version", "1.0", "--handler", str(handler),
               "--export-path", str(store), "--force"]
    if serialized is not None:
        command += ["--serialized-file", str(serialized)]
    if extra_files:
        command += ["--extra-files", ",".join(str(f) for f in extra_files)]
    if threads:
        import yaml

        config = Path(store) / f".{name}-config.yaml"
        config.write_text(yaml.safe_dump({"handler": {"threads": threads}}))
        command += ["--config-file", str(config)]
    subprocess.run(command, check=True, capture_output=True)
    return f"{name}.mar"


def write_bodies(directory: Path, name: str, instance: np.ndarray) -> dict[str, Path]:
    """One instance as a JSON body and as an .npy body."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, npy_path = directory / f"{name}.json", directory / f"{name}.npy"
    json_path.write_text(json.dumps({"data": instance.tolist()}))
    npy_path.write_bytes(npy_bytes(instance))
    return {"json": json_path, "npy": npy_path}


def prepare(name: str, model: torch.nn.Module, contract: InputContract, heldout: np.ndarray, build_dir: Path,
            store: Path, threads: int = 0, formats: tuple[str, ...] = FORMATS) -> BenchModel:
    """Export + validate, archive ours, plain and no-op, write bodies.

    ``formats`` without "aoti" skips the AOTInductor compile (tens of seconds) where no target serves it.
    """
    model_dir = build_dir / name
    build = ModelBuild(name, contract, LABELS, Batching(), formats=formats)
    build_model_dir(model, build, heldout, model_dir)
    if threads:
        _set_threads(model_dir / "model-config.yaml", threads)
        seal(model_dir)  # the setting the bench chose, vouched for again so archive.sh packs it
    run_archive_sh([model_dir], store, quiet=True)
    archives = {
        "ours_ts": f"{name}_ts.mar",
        "ours_onnx": f"{name}_onnx.mar",
        "plain_ts": archive_reference(f"{name}_plain", REFERENCE_HANDLERS / "plain_handler.py", store,
                                      model_dir / "model.pt"),
        "noop": archive_reference("noop", REFERENCE_HANDLERS / "noop_handler.py", store, None),
    }
    if (model_dir / AOTI_FILE).exists():
        archives["ours_aoti"] = f"{name}_aoti.mar"
    return BenchModel(name, archives, write_bodies(build_dir / "bodies", name, heldout[0]), model_dir, heldout[0])


def _set_threads(config_path: Path, threads: int) -> None:
    import yaml

    document = yaml.safe_load(config_path.read_text())
    document["handler"]["threads"] = threads
    config_path.write_text(yaml.safe_dump(document, sort_keys=False))


def bench_cnn(build_dir: Path, store: Path, threads: int = 0, name: str = "bench_cnn",
              formats: tuple[str, ...] = FORMATS) -> BenchModel:
    """The compute-bound 3x64x64 CNN with seeded random weights."""
    torch.manual_seed(BENCH_SEED)
    model = BenchCNN().eval()
    heldout = np.random.default_rng(BENCH_SEED).uniform(0, 1, size=(64, *BENCH_CNN_SHAPE)).astype(np.float32)
    contract = InputContract("image", BENCH_CNN_SHAPE, "float32", 0.0, 1.0)
    return prepare(name, model, contract, heldout, build_dir, store, threads, formats)


def digits_mlp(build_dir: Path, store: Path, threads: int = 0, name: str = "digits_mlp",
               formats: tuple[str, ...] = FORMATS) -> BenchModel:
    """The trained demo MLP."""
    from servekit.examples.demo import demo_build_inputs

    model, build, heldout = demo_build_inputs("digits_mlp", build_dir, Batching())
    return prepare(name, model, build.contract, heldout, build_dir, store, threads, formats)
