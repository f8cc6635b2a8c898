"""Served on a GPU end to end: TorchServe and our handler on CUDA, beside the same archives on the CPU of the
same machine and the in-process ceilings, with every served answer checked against eager PyTorch on the CPU.

``servekit gpu-served --prepare-only`` (here, on the CPU machine): the 3x64x64 benchmark CNN (seeded weights)
exported and validated as TorchScript and ONNX, one model folder per device (``deviceType: gpu`` / ``cpu`` in
model-config.yaml, which TorchServe 0.12 reads), archived into ``BUILD/gpu_served/store``.

``servekit gpu-served`` (on the GPU machine; Java and torchserve on the PATH): compiles the model's ``.pt2``
for CUDA there (AOTInductor packages are compiled for one device), archives it, starts TorchServe, registers
every archive, sends every held-out input from concurrent clients, checks each answer, reads from the worker
log which device each model really ran on, and writes ``reports/gpu_served.{md,json}``.
"""
from __future__ import annotations

import json
import platform
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from handlers.backends import load_backend
from handlers.config import InputContract
from servekit.build.archiving import run_archive_sh
from servekit.build.model_config import MODEL_CONFIG_FILE, Batching
from servekit.build.model_dir import ModelBuild, build_model_dir, seal
from servekit.examples.models import BENCH_CNN_SHAPE, BenchCNN
from servekit.measure.reports import write_report
from servekit.serve.client import TorchServeClient, npy_bytes
from servekit.serve.load import run_load
from servekit.serve.torchserve import TorchServe

SERVED_DIR = "gpu_served"
STORE = "store"
INPUTS_FILE = "inputs.npy"
WEIGHTS_FILE = "weights.pt"
SEED = 0
HELD_OUT = 256
DEVICES = ("gpu", "cpu")
BATCHING = Batching(batch_size=32, max_batch_delay_ms=5)
CONCURRENCY = 64
LOAD_REPEATS = 4  # each held-out input sent this many times for the throughput run
PROBABILITY_ATOL = 1e-4  # served top-1 probability vs eager FP32 on the CPU (TF32 is off in our backends)
CEILING_CALLS = 50
READY_LINE = re.compile(r"model (?P<name>\S+) ready: (?P<describe>.*?), task ")


def model_name(device: str) -> str:
    """The model folder (and archive prefix) for one TorchServe device type."""
    return f"cnn_{device}"


def bench_model(directory: Path | None = None) -> torch.nn.Module:
    """The benchmark CNN with the seeded weights (saved to ``directory`` when given, loaded from it otherwise)."""
    weights = None if directory is None else directory / WEIGHTS_FILE
    if weights is not None and weights.exists():
        model = BenchCNN()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.eval()
    torch.manual_seed(SEED)
    model = BenchCNN().eval()
    if weights is not None:
        torch.save(model.state_dict(), weights)
    return model


def prepare(build_dir: Path) -> Path:
    """Export, validate and archive the CNN once per device type; returns the served folder."""
    root = build_dir / SERVED_DIR
    root.mkdir(parents=True, exist_ok=True)
    model = bench_model(root)
    inputs = np.random.default_rng(SEED).uniform(0, 1, (HELD_OUT, *BENCH_CNN_SHAPE)).astype(np.float32)
    np.save(root / INPUTS_FILE, inputs)
    contract = InputContract("image", BENCH_CNN_SHAPE, "float32", 0.0, 1.0)
    folders = []
    for device in DEVICES:
        build = ModelBuild(model_name(device), contract, (), BATCHING, formats=("torchscript", "onnx"))
        folder = build_model_dir(model, build, inputs[:64], root / build.name)
        set_device_type(folder, device)
        folders.append(folder)
    run_archive_sh(folders, root / STORE, quiet=True)
    return root


def set_device_type(folder: Path, device: str) -> None:
    """Write TorchServe's ``deviceType`` into model-config.yaml and vouch for the new file."""
    path = folder / MODEL_CONFIG_FILE
    document = yaml.safe_load(path.read_text())
    document["deviceType"] = device
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    seal(folder)


def compile_for_cuda(root: Path) -> Path:
    """The model's ``.pt2`` compiled for this machine's GPU, checked against eager, sealed and archived."""
    from servekit.build.export import ExportSpec, capture, compile_aoti

    folder = root / model_name("gpu")
    on_gpu = bench_model(root).to("cuda")
    package = compile_aoti(capture(on_gpu, ExportSpec("image", BENCH_CNN_SHAPE)), folder / "model.pt2")
    inputs = np.load(root / INPUTS_FILE)[:64]
    backend = load_backend(package, 0, threads=1)
    with torch.inference_mode():
        expected = bench_model(root)(torch.from_numpy(inputs)).numpy()
    worst = float(np.abs(backend.run(inputs) - expected).max())
    if worst > 1e-3:
        raise RuntimeError(f"the CUDA .pt2 differs from eager by {worst:.3g}")
    report = json.loads((folder / "validation.json").read_text())
    report["aoti"] = [{"batch_size": len(inputs), "device": backend.describe(), "max_abs_diff": worst, "passed": True}]
    seal(folder, report)
    run_archive_sh([folder], root / STORE, quiet=True)
    return package


@dataclass(frozen=True)
class ServedRow:
    """One archive served: where its worker ran, whether every answer was right, and how fast."""

    archive: str
    device: str
    worker: str
    answers_checked: int
    wrong_class: int
    worst_probability_diff: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float


def expected_answers(root: Path, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eager FP32 on the CPU: each input's class and its probability."""
    with torch.inference_mode():
        probabilities = torch.softmax(bench_model(root)(torch.from_numpy(inputs)).double(), dim=1).numpy()
    return probabilities.argmax(1), probabilities.max(1)


def serve_one(client: TorchServeClient, archive: str, inputs: np.ndarray, expected: tuple[np.ndarray, np.ndarray],
              log_dir: Path) -> ServedRow:
    """Register, check every answer, then measure at CONCURRENCY; unregister."""
    name = archive.removesuffix(".mar")
    client.register(archive, batch_size=BATCHING.batch_size, max_batch_delay_ms=BATCHING.max_batch_delay_ms)
    try:
        bodies = [npy_bytes(x) for x in inputs]
        checked = run_load(lambda body: client.predict_raw(name, body, "application/x-npy"), bodies, CONCURRENCY)
        answers = [response.json()["predictions"][0] for response in checked.answers]
        classes = np.array([a["class"] for a in answers])
        top = np.array([a["top_k"][0]["probability"] for a in answers])
        load = run_load(lambda body: client.predict_raw(name, body, "application/x-npy"), bodies * LOAD_REPEATS,
                        CONCURRENCY)
        failed = [r.status_code for r in load.answers if r.status_code != 200]
        if failed:
            raise RuntimeError(f"{name}: {len(failed)} requests failed under load ({sorted(set(failed))})")
        gpu = any(worker.get("gpu") for entry in client.describe(name) for worker in entry.get("workers", []))
        return ServedRow(name, "gpu" if gpu else "cpu", worker_description(log_dir, name), len(answers),
                         int((classes != expected[0]).sum()), float(np.abs(top - expected[1]).max()),
                         round(load.throughput, 1), round(load.percentile(50), 2), round(load.percentile(99), 2))
    finally:
        client.unregister(name)


def worker_description(log_dir: Path, name: str) -> str:
    """What the handler said it loaded ("onnxruntime ... on cuda:0"), from the worker log."""
    for log in sorted(log_dir.glob("model_log*.log")):
        for match in READY_LINE.finditer(log.read_text(errors="replace")):
            if match["name"] == name:
                return match["describe"]
    return "not logged"


def in_process_ceilings(root: Path, inputs: np.ndarray) -> dict[str, float]:
    """Items/s of each artifact through our own backends at the served batch size, no server in between."""
    batch = np.ascontiguousarray(inputs[:BATCHING.batch_size])
    ceilings = {}
    folder = root / model_name("gpu")
    for artifact in ("model.pt", "model.onnx", "model.pt2"):
        if not (folder / artifact).exists():
            continue
        devices = (("cuda", 0),) * torch.cuda.is_available() + (("cpu", None),) * (artifact != "model.pt2")
        for device, gpu_id in devices:  # a .pt2 exists here only compiled for CUDA
            backend = load_backend(folder / artifact, gpu_id, threads=torch.get_num_threads())
            for _ in range(5):
                backend.run(batch)
            started = time.perf_counter()
            for _ in range(CEILING_CALLS):
                backend.run(batch)
            ceilings[f"{artifact} on {device}"] = round(CEILING_CALLS * len(batch) / (time.perf_counter() - started), 1)
    return ceilings


def run(build_dir: Path, reports_dir: Path) -> dict:
    """Serve every archive on this machine's GPU and CPU; check, measure, report."""
    root = build_dir / SERVED_DIR
    if not (root / INPUTS_FILE).exists():
        prepare(build_dir)
    cuda = torch.cuda.is_available()
    doc: dict = {"machine": {"gpu": torch.cuda.get_device_name(0) if cuda else None, "cpu_threads": torch.get_num_threads(),
                             "python": platform.python_version(), "torch": torch.__version__}}
    if cuda:
        from servekit.build.export import ExportUnsupported

        try:
            doc["pt2_cuda"] = {"compiled": str(compile_for_cuda(root))}
        except ExportUnsupported as err:  # reported, and every other archive is still served
            doc["pt2_cuda"] = {"error": str(err)}
            print(f"    no CUDA .pt2: {err}", flush=True)
    inputs = np.load(root / INPUTS_FILE)
    expected = expected_answers(root, inputs)
    archives = sorted(p.name for p in (root / STORE).glob("*.mar"))
    server = TorchServe(root / STORE, root / "server")
    rows = []
    with server as client:
        for archive in archives:
            print(f"==> serving {archive}", flush=True)
            rows.append(serve_one(client, archive, inputs, expected, server.log_dir))
            print(f"    {rows[-1]}", flush=True)
    doc["served"] = [asdict(row) for row in rows]
    doc["in_process_items_per_s"] = in_process_ceilings(root, inputs)
    write_report(reports_dir, "gpu_served", doc, render(doc))
    shutil.rmtree(root / "server" / "tmp", ignore_errors=True)
    return doc


def render(doc: dict) -> str:
    """reports/gpu_served.md."""
    machine = doc["machine"]
    lines = ["# Served on a GPU", "", f"Generated by `servekit gpu-served` on {machine['gpu'] or 'a machine without CUDA'} "
             f"(torch {machine['torch']}, {machine['cpu_threads']} CPU threads). The 3x64x64 benchmark CNN, one request "
             f"per image as .npy, batch {BATCHING.batch_size} / {BATCHING.max_batch_delay_ms} ms, {CONCURRENCY} "
             "concurrent clients on the same machine. Every answer is checked against eager FP32 on the CPU.", "",
             "| archive | device (TorchServe) | what the worker loaded | answers | wrong class | worst prob. diff "
             "| req/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["served"]:
        lines.append(f"| {r['archive']} | {r['device']} | {r['worker']} | {r['answers_checked']} | {r['wrong_class']} "
                     f"| {r['worst_probability_diff']:.2g} | {r['requests_per_s']:,} | {r['p50_ms']} | {r['p99_ms']} |")
    if "error" in doc.get("pt2_cuda", {}):
        lines += ["", f"No CUDA `.pt2` was served: {doc['pt2_cuda']['error']}"]
    lines += ["", "In-process through the same backends, batch of the served size (items/s):", ""]
    lines += [f"- {name}: {value:,}" for name, value in doc["in_process_items_per_s"].items()]
    return "\n".join(lines) + "\n"
