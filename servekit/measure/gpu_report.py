"""`servekit gpu-report`: every variant in-process on the GPU and on the same machine's CPU, side by side.

Times the handler's own backends (what a worker runs: host batch in, host answer out, so each GPU
row pays its host<->device copies), plus one device-resident ceiling that pays none. Needs torch,
numpy and onnxruntime(-gpu) only: no Java, no TorchServe. Run ``--prepare-only`` where the training
data is, carry ``build/gpu`` to the GPU machine, and run ``python -m servekit.measure.gpu_report`` there.
"""
from __future__ import annotations

import argparse
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from handlers.backends.telemetry import opt_out_of_ort_telemetry
from handlers.cores import available_cores
from servekit.measure.gpu_options import BATCH_SIZES, DEFAULT_SECONDS, ROUNDS, add_arguments
from servekit.measure.gpu_artifacts import ARTIFACTS, GPU_DIR, GpuModel, load_models
from servekit.measure.reports import write_report

opt_out_of_ort_telemetry()

WARMUP_CALLS = 5
MIN_CALLS = 5
TARGET_MODEL, TARGET_BATCH, TARGET_SPEEDUP = "bench_cnn", 64, 20.0


@dataclass(frozen=True)
class Config:
    """One way of running one artifact: device, runtime, precision, and how data reaches the device."""

    key: str
    artifact: str
    device: str          # "cpu" or "cuda"
    io: str              # "run", "io_binding", "pinned", "cuda-graph", "device-resident"
    served: bool = True  # False: a ceiling a server cannot reach (inputs already on the device)

    @property
    def runtime(self) -> str:
        return ARTIFACTS[self.artifact][1]

    @property
    def precision(self) -> str:
        return ARTIFACTS[self.artifact][2]


CONFIGS = (
    Config("cpu_ort_fp32", "model.onnx", "cpu", "run"),
    Config("cpu_ort_qdq_int8", "model_qdq.onnx", "cpu", "run"),
    Config("cpu_ts_fp32", "model.pt", "cpu", "run"),
    Config("cuda_ort_fp32_run", "model.onnx", "cuda", "run"),
    Config("cuda_ort_fp32_iobinding", "model.onnx", "cuda", "io_binding"),
    Config("cuda_ort_fp16_run", "model_fp16.onnx", "cuda", "run"),
    Config("cuda_ort_fp16_iobinding", "model_fp16.onnx", "cuda", "io_binding"),
    Config("cuda_ts_fp32", "model.pt", "cuda", "pinned"),
    Config("cuda_ts_fp16", "model_fp16.pt", "cuda", "pinned"),
    Config("cuda_ort_fp32_graph", "model.onnx", "cuda", "cuda-graph"),
    Config("cuda_ort_fp16_graph", "model_fp16.onnx", "cuda", "cuda-graph"),
    Config("cuda_ts_fp32_graph", "model.pt", "cuda", "cuda-graph"),
    Config("cuda_ts_fp16_graph", "model_fp16.pt", "cuda", "cuda-graph"),
    Config("cuda_ort_fp16_resident", "model_fp16.onnx", "cuda", "device-resident", served=False),
)


@dataclass
class Row:
    """One configuration at one batch size."""

    model: str
    config: str
    runtime: str
    precision: str
    device: str
    io: str
    served: bool
    batch_size: int
    items_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    copies_per_batch: int = 0
    copied_bytes_per_batch: int = 0
    max_abs_diff_vs_cpu_fp32: float = 0.0
    top1_agreement_vs_cpu_fp32: float = 0.0
    skipped: str = ""
    samples_ms: list[float] = field(default_factory=list, repr=False)


def cuda_ready() -> tuple[bool, bool, str]:
    """(torch has CUDA, onnxruntime has its CUDA provider, a line describing the machine)."""
    import onnxruntime as ort

    torch_cuda = torch.cuda.is_available()
    ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    gpu = torch.cuda.get_device_name(0) if torch_cuda else "no CUDA device"
    return torch_cuda, ort_cuda, (f"{gpu}; {available_cores()} CPU cores ({platform.processor() or platform.machine()}); "
                                  f"torch {torch.__version__}, onnxruntime {ort.__version__}")


def make_runner(model: GpuModel, config: Config, threads: int, batch_sizes: Sequence[int]
                ) -> tuple[Callable[[np.ndarray], np.ndarray], object]:
    """A function of a host batch that runs ``config`` the way a worker would (or the ceiling)."""
    path = model.directory / config.artifact
    gpu_id = 0 if config.device == "cuda" else None
    graph_sizes = tuple(batch_sizes) if config.io == "cuda-graph" else ()
    if config.runtime == "onnx":
        from handlers.backends.onnxruntime import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(path, gpu_id, threads, io_binding=config.io != "run",
                                     cuda_graph_sizes=graph_sizes)
        if config.device == "cuda" and backend.provider != "CUDAExecutionProvider":
            raise RuntimeError(f"{config.key}: ONNX Runtime fell back to {backend.provider}")
        if config.io == "device-resident":
            return _resident(backend), backend
        return backend.run, backend
    backend = _torchscript(model, path, gpu_id, threads, graph_sizes)
    return backend.run, backend


def _torchscript(model: GpuModel, path: Path, gpu_id: int | None, threads: int, graph_sizes: Sequence[int]):
    """The TorchScript backend; a file saved by a newer torch is re-traced here from the weights."""
    from handlers.backends.torchscript import TorchScriptBackend

    try:
        return TorchScriptBackend(path, gpu_id, threads, graph_sizes)
    except RuntimeError as err:
        from servekit.build.export import ExportSpec, export_torchscript
        from servekit.build.optimize.quantize import torch_fp16

        print(f"  re-tracing {path.name} with this torch ({str(err).splitlines()[0][:100]})")
        fp32 = model.factory()
        retraced = path.with_name(f"local_{path.name}")
        export_torchscript(torch_fp16(fp32) if "fp16" in path.name else fp32,
                           ExportSpec(model.input_name, model.input_shape), retraced)
        return TorchScriptBackend(retraced, gpu_id, threads, graph_sizes)


def _resident(backend) -> Callable[[np.ndarray], np.ndarray]:
    """Inputs copied to the device once, outputs left there: the GPU's own speed, without a server's copies."""
    import onnxruntime as ort

    session, cache = backend.session, {}

    def run(batch: np.ndarray) -> np.ndarray:
        if batch.shape not in cache:
            binding = session.io_binding()
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch, np.float32), "cuda", 0)
            binding.bind_ortvalue_input(backend.input_name, value)
            for output in session.get_outputs():
                binding.bind_output(output.name, "cuda", 0)
            cache[batch.shape] = (binding, value)
        binding = cache[batch.shape][0]
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return np.empty((batch.shape[0], 0), np.float32)  # nothing comes back: that is the point

    return run


def _time(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, seconds: float) -> list[float]:
    samples, deadline = [], time.perf_counter() + seconds
    while len(samples) < MIN_CALLS or time.perf_counter() < deadline:
        started = time.perf_counter()
        run(batch)
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def measure(models: Sequence[GpuModel], batch_sizes: Sequence[int] = BATCH_SIZES, seconds: float = DEFAULT_SECONDS,
            rounds: int = ROUNDS, configs: Sequence[Config] = CONFIGS) -> tuple[list[Row], str]:
    """Every model x config x batch size, interleaved round by round so all share the machine's drift."""
    torch_cuda, ort_cuda, machine = cuda_ready()
    threads = available_cores()
    rows: list[Row] = []
    for model in models:
        inputs = model.inputs()
        batches = {b: np.ascontiguousarray(np.resize(inputs, (b, *inputs.shape[1:]))) for b in batch_sizes}
        runners, model_rows = {}, {}
        for config in configs:
            reason = _unavailable(config, torch_cuda, ort_cuda)
            for size in batch_sizes:
                model_rows[(config.key, size)] = Row(model.name, config.key, config.runtime, config.precision,
                                                     config.device, config.io, config.served, size, skipped=reason)
            if not reason:
                runners[config.key] = make_runner(model, config, threads, batch_sizes)[0]
        print(f"==> {model.name}: {len(runners)} configurations x batch {list(batch_sizes)}", flush=True)
        reference = runners["cpu_ort_fp32"]
        for size, batch in batches.items():
            expected = reference(batch)
            for key, run in runners.items():
                row = model_rows[(key, size)]
                answer = run(batch)
                for _ in range(WARMUP_CALLS):
                    run(batch)
                _fill_copies_and_agreement(row, batch, answer, expected)
        for _ in range(rounds):
            for size, batch in batches.items():
                for key, run in runners.items():
                    model_rows[(key, size)].samples_ms += _time(run, batch, seconds)
        for row in model_rows.values():
            if row.samples_ms:
                row.p50_ms = float(np.percentile(row.samples_ms, 50))
                row.p99_ms = float(np.percentile(row.samples_ms, 99))
                row.items_per_s = row.batch_size / (row.p50_ms / 1000.0)
        rows.extend(model_rows.values())
    return rows, machine


def _unavailable(config: Config, torch_cuda: bool, ort_cuda: bool) -> str:
    if config.device == "cpu":
        return ""
    if config.runtime == "onnx" and not ort_cuda:
        return "onnxruntime has no CUDA provider (install onnxruntime-gpu)"
    if config.runtime == "torchscript" and not torch_cuda:
        return "torch has no CUDA device"
    return ""


def _fill_copies_and_agreement(row: Row, batch: np.ndarray, answer: np.ndarray, expected: np.ndarray) -> None:
    if row.device == "cuda" and row.served:
        row.copies_per_batch = 2  # the batch in, the logits out
        row.copied_bytes_per_batch = int(batch.nbytes + expected.nbytes)
    if answer.shape == expected.shape:
        row.max_abs_diff_vs_cpu_fp32 = float(np.abs(answer - expected).max())
        row.top1_agreement_vs_cpu_fp32 = float((answer.argmax(axis=1) == expected.argmax(axis=1)).mean())


def targets(rows: Sequence[Row]) -> dict:
    """The issue's targets on the benchmark CNN at batch 64: GPU >= 20x CPU, FP16 >= FP32."""
    at = [r for r in rows if r.model == TARGET_MODEL and r.batch_size == TARGET_BATCH and r.items_per_s > 0]
    cpu = [r for r in at if r.device == "cpu"]
    gpu = [r for r in at if r.device == "cuda" and r.served]
    if not cpu or not gpu:
        return {"checked": False, "why": "no GPU rows: this machine has no usable CUDA device"}
    best_cpu, best_gpu = max(cpu, key=lambda r: r.items_per_s), max(gpu, key=lambda r: r.items_per_s)
    fp16 = max((r for r in gpu if r.precision == "fp16"), key=lambda r: r.items_per_s)
    fp32 = max((r for r in gpu if r.precision == "fp32"), key=lambda r: r.items_per_s)
    speedup = best_gpu.items_per_s / best_cpu.items_per_s
    return {
        "checked": True, "model": TARGET_MODEL, "batch_size": TARGET_BATCH,
        "best_cpu": best_cpu.config, "best_cpu_items_per_s": best_cpu.items_per_s,
        "best_gpu": best_gpu.config, "best_gpu_items_per_s": best_gpu.items_per_s,
        "gpu_over_cpu": speedup, "gpu_over_cpu_met": speedup >= TARGET_SPEEDUP,
        "best_fp16": fp16.config, "best_fp32": fp32.config, "fp16_over_fp32": fp16.items_per_s / fp32.items_per_s,
        "fp16_at_least_fp32_met": fp16.items_per_s >= fp32.items_per_s,
    }


def write_reports(rows: Sequence[Row], machine: str, reports_dir: Path, seconds: float, rounds: int) -> Path:
    """reports_dir/gpu.md, gpu.json and (with matplotlib) gpu.png."""
    verdict = targets(rows)
    payload = {"machine": machine, "seconds_per_round": seconds, "rounds": rounds, "targets": verdict,
               "rows": [{k: v for k, v in asdict(r).items() if k != "samples_ms"} for r in rows]}
    report = write_report(reports_dir, "gpu", payload, _markdown(rows, machine, verdict, seconds, rounds))
    _plot(rows, reports_dir / "gpu.png")
    return report


def _markdown(rows: Sequence[Row], machine: str, verdict: dict, seconds: float, rounds: int) -> str:
    lines = ["# GPU report: every variant in-process, GPU vs the same machine's CPU", "",
             f"Machine: {machine}.", "",
             f"Each row is the handler's own backend (`handlers/backends`) called with a host batch and returning "
             f"host logits, as a TorchServe worker does, so GPU rows include their host<->device copies "
             f"(`copies` per batch, and the bytes moved). `_graph` rows replay a CUDA graph captured per batch "
             f"size (`handler.cuda_graph_batch_sizes`), fed from pinned or bound host buffers. "
             f"`cuda_ort_fp16_resident` is the exception: its input "
             f"stays on the device and nothing comes back, the ceiling no server reaches. CPU rows use all "
             f"{available_cores()} cores. Interleaved: {rounds} rounds of {seconds:g} s per row and batch size; "
             f"items/s = batch / p50. Agreement and max |diff| are against CPU ONNX Runtime FP32 on the same "
             f"inputs (the demo CNN's are held-out digits).", ""]
    lines += _target_lines(verdict)
    for model in dict.fromkeys(r.model for r in rows):
        lines += ["", f"## {model}", "",
                  "| configuration | batch | items/s | p50 ms | p99 ms | vs best CPU | copies | bytes copied | "
                  "max abs diff | top-1 agreement |", "|---|---|---|---|---|---|---|---|---|---|"]
        mine = [r for r in rows if r.model == model]
        for size in dict.fromkeys(r.batch_size for r in mine):
            at = [r for r in mine if r.batch_size == size]
            best_cpu = max((r.items_per_s for r in at if r.device == "cpu"), default=0.0)
            for r in at:
                if r.skipped:
                    lines.append(f"| {r.config} | {size} | skipped: {r.skipped} | | | | | | | |")
                    continue
                ratio = f"{r.items_per_s / best_cpu:.1f}x" if best_cpu else ""
                agreement = f"{r.top1_agreement_vs_cpu_fp32:.2%}" if r.served else ""
                diff = f"{r.max_abs_diff_vs_cpu_fp32:.2e}" if r.served else ""
                lines.append(f"| {r.config} | {size} | {r.items_per_s:,.0f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | "
                             f"{ratio} | {r.copies_per_batch} | {r.copied_bytes_per_batch:,} | {diff} | {agreement} |")
    return "\n".join(lines) + "\n"


def _target_lines(verdict: dict) -> list[str]:
    if not verdict["checked"]:
        return [f"Targets not checked: {verdict['why']}."]
    mark = {True: "met", False: "NOT met"}
    return [
        f"Targets ({verdict['model']}, batch {verdict['batch_size']}):",
        f"- best GPU configuration served ({verdict['best_gpu']}, {verdict['best_gpu_items_per_s']:,.0f} items/s) is "
        f"**{verdict['gpu_over_cpu']:.1f}x** the best CPU one ({verdict['best_cpu']}, "
        f"{verdict['best_cpu_items_per_s']:,.0f} items/s): target >= {TARGET_SPEEDUP:g}x "
        f"{mark[verdict['gpu_over_cpu_met']]}.",
        f"- best FP16 ({verdict['best_fp16']}) is **{verdict['fp16_over_fp32']:.2f}x** the best FP32 "
        f"({verdict['best_fp32']}): target >= 1x {mark[verdict['fp16_at_least_fp32_met']]}.",
    ]


def _plot(rows: Sequence[Row], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  matplotlib is not installed: no gpu.png")
        return
    models = list(dict.fromkeys(r.model for r in rows))
    figure, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5), squeeze=False)
    for axis, model in zip(axes[0], models):
        for config in dict.fromkeys(r.config for r in rows if r.model == model and r.items_per_s > 0):
            points = [(r.batch_size, r.items_per_s) for r in rows if r.model == model and r.config == config]
            axis.plot(*zip(*points), marker="o", label=config, linestyle="--" if config.startswith("cpu") else "-")
        axis.set(xscale="log", yscale="log", xlabel="batch size", ylabel="items/s (p50)", title=model)
        axis.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_report(build_dir: Path, reports_dir: Path, batch_sizes: Sequence[int] = BATCH_SIZES,
               seconds: float = DEFAULT_SECONDS, rounds: int = ROUNDS, prepare_only: bool = False) -> int:
    """Prepare the artifacts when missing, measure, write the reports; returns the exit status."""
    gpu_dir = build_dir / GPU_DIR
    models = load_models(gpu_dir)
    if not models or prepare_only:
        from servekit.measure.gpu_artifacts import prepare

        print(f"==> preparing and checking the artifacts in {gpu_dir} (CPU)", flush=True)
        models = prepare(build_dir)
        if prepare_only:
            return 0
    started = time.perf_counter()
    rows, machine = measure(models, batch_sizes, seconds, rounds)
    report = write_reports(rows, machine, reports_dir, seconds, rounds)
    print(report.read_text())
    print(f"measured in {time.perf_counter() - started:.0f} s; wrote {report} and gpu.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m servekit.measure.gpu_report``: what a GPU machine without the servekit install runs."""
    parser = argparse.ArgumentParser(prog="servekit gpu-report", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_report(args.build_dir, args.reports_dir, args.batch_sizes, args.seconds, args.rounds, args.prepare_only)



if __name__ == "__main__":
    raise SystemExit(main())
