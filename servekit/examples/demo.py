"""The end-to-end demo: train, export, validate, archive, serve, register, infer, report, stop."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handlers.config import InputContract
from servekit.build.archiving import run_archive_sh
from servekit.build.model_dir import ModelBuild, build_model_dir
from servekit.serve.client import TorchServeClient, npy_bytes
from servekit.examples.data import LABELS, load_digits_split
from servekit.serve.load import LoadResult, run_load
from servekit.build.model_config import Batching
from servekit.examples.models import DEMO_MODELS
from servekit.serve.torchserve import TorchServe
from servekit.examples.train import train_demo
from servekit.build.validate import aoti_runner, onnx_runner, torchscript_runner

PIXEL_RANGE = (0.0, 1.0)
ARCHIVE_FORMATS = {"ts": ("model.pt", torchscript_runner), "onnx": ("model.onnx", onnx_runner),
                   "aoti": ("model.pt2", aoti_runner)}


def demo_build_inputs(name: str, build_dir: Path, batching: Batching) -> tuple[torch.nn.Module, ModelBuild, np.ndarray]:
    """A trained demo model (trained now if its weights are missing), its build spec and held-out inputs."""
    if name not in DEMO_MODELS:
        raise SystemExit(f"unknown demo model {name!r}; choose from {sorted(DEMO_MODELS)}")
    spec = DEMO_MODELS[name]
    split = load_digits_split()
    weights = build_dir / name / "weights.pt"
    if not weights.exists():
        train_demo(spec, split, build_dir / name)
    model = spec.factory()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    contract = InputContract(spec.input_name, spec.input_shape, "float32", *PIXEL_RANGE)
    build = ModelBuild(name, contract, LABELS, batching)
    return model.eval(), build, split.x_test.reshape(-1, *spec.input_shape)


def step(title: str) -> None:
    """Visible progress."""
    print(f"\n==> {title}", flush=True)


@dataclass(frozen=True)
class ServedResult:
    """What one archive did when served."""

    archive: str
    in_process_accuracy: float
    served_accuracy: float
    disagreements: int
    sequential: LoadResult
    concurrent: LoadResult


def write_samples(directory: Path, split) -> None:
    """One held-out image per demo model as JSON and .npy, for the README's curl examples."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, spec in DEMO_MODELS.items():
        image = split.x_test[0].reshape(spec.input_shape)
        (directory / f"{name}.json").write_text(json.dumps({"data": image.tolist()}))
        (directory / f"{name}.npy").write_bytes(npy_bytes(image))
    print(f"  wrote curl samples (held-out image 0, a '{split.y_test[0]}') to {directory}/")


def run_archive(client: TorchServeClient, archive: str, x_test: np.ndarray, y_test: np.ndarray,
                in_process: np.ndarray, concurrency: int) -> ServedResult:
    """Held-out images one per request: JSON sequentially, then npy concurrently."""
    sequential = run_load(lambda x: client.predict_json(archive, x.tolist()), list(x_test))
    concurrent = run_load(lambda x: client.predict_npy(archive, x), list(x_test), concurrency)
    served = np.array([answer["predictions"][0]["class"] for answer in concurrent.answers])
    served_json = np.array([answer["predictions"][0]["class"] for answer in sequential.answers])
    return ServedResult(archive, float((in_process == y_test).mean()), float((served == y_test).mean()),
                        int((served != in_process).sum() + (served_json != in_process).sum()),
                        sequential, concurrent)


def run_demo(build_dir: Path, model_store: Path, batching: Batching, concurrency: int) -> int:
    """Run every step; exit status 1 if served answers differ from in-process ones."""
    split = load_digits_split()
    step("1/6 train demo models on scikit-learn digits (fixed split, seed 0)")
    for spec in DEMO_MODELS.values():
        metrics = train_demo(spec, split, build_dir / spec.name)
        print(f"  {spec.name}: held-out accuracy {metrics['test_accuracy']:.2%} "
              f"on {metrics['test_samples']} images ({metrics['train_seconds']}s)")

    step("2/6 export TorchScript, ONNX and AOTInductor (.pt2) and validate against eager PyTorch (batch 1, 7, 64)")
    for name in DEMO_MODELS:
        model, build, heldout = demo_build_inputs(name, build_dir, batching)
        print(f"  {name}:")
        build_model_dir(model, build, heldout, build_dir / name)

    write_samples(build_dir / "samples", split)

    step(f"3/6 archive into {model_store}/ with archive.sh")
    run_archive_sh([build_dir / n for n in DEMO_MODELS], model_store)

    step("4/6 start TorchServe (token auth on, loopback only)")
    server = TorchServe(model_store, build_dir / "server")
    print("  " + " ".join(server.command()))
    results = []
    with server as client:
        print(f"  healthy: inference on :{server.ports.inference}, management on :{server.ports.management}")
        step(f"5/6 register with batch_size={batching.batch_size}, max_batch_delay={batching.max_batch_delay_ms} ms "
             f"and send {len(split.y_test)} held-out images per model")
        for name, spec in DEMO_MODELS.items():
            x_test = split.x_test.reshape(-1, *spec.input_shape)
            for suffix, (artifact, runner) in ARCHIVE_FORMATS.items():
                archive = f"{name}_{suffix}"
                started = time.perf_counter()
                client.register(f"{archive}.mar", batch_size=batching.batch_size,
                                max_batch_delay_ms=batching.max_batch_delay_ms, initial_workers=batching.min_workers)
                print(f"  registered {archive} in {time.perf_counter() - started:.1f}s")
                in_process = runner(build_dir / name / artifact)(x_test).argmax(axis=1)
                result = run_archive(client, archive, x_test, split.y_test, in_process, concurrency)
                first = result.concurrent.answers[0]["predictions"][0]
                print(f"    first image: true {split.y_test[0]}, predicted {first['label']} "
                      f"(p={first['top_k'][0]['probability']:.3f})")
                results.append(result)
        step("6/6 stop TorchServe")
    _print_results(results, concurrency)
    bad = [r.archive for r in results if r.disagreements or r.served_accuracy != r.in_process_accuracy]
    if bad:
        print(f"\nFAILED: served predictions differ from in-process ones for {bad}")
        return 1
    print("\nserved accuracy equals in-process accuracy for every archive")
    return 0


def _print_results(results: list[ServedResult], concurrency: int) -> None:
    print(f"\n| archive | in-process acc | served acc | sequential JSON p50 / p99 (ms) | "
          f"concurrent npy ({concurrency}) p50 / p99 (ms) | concurrent req/s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.archive} | {r.in_process_accuracy:.2%} | {r.served_accuracy:.2%} | "
              f"{r.sequential.percentile(50):.2f} / {r.sequential.percentile(99):.2f} | "
              f"{r.concurrent.percentile(50):.2f} / {r.concurrent.percentile(99):.2f} | {r.concurrent.throughput:.0f} |")
