"""`servekit bench --images`: a ResNet-18 at 3x224x224 served with real JPEG bodies, side by side: ours
(ONNX Runtime static QDQ INT8 and FP32), the reference image handler the docs show (TorchScript FP32),
the no-op, and the in-process ceiling that includes decode and preprocessing."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from handlers.backends import load_backend
from handlers.config import HandlerConfig, default_intra_op_threads
from handlers.cores import available_cores
from servekit.build.archiving import run_archive_sh
from servekit.measure.bench.artifacts import REFERENCE_HANDLERS, BenchModel, archive_reference
from servekit.measure.bench.run import Setting, Target, as_json, measure_side_by_side, start_server, warm_up_frontend
from servekit.build.images import encode, photo_crops, sample_photos
from servekit.examples.vision import IMAGENET_MEAN, IMAGENET_STD
from servekit.measure.reports import write_report

NAME = "bench_resnet18"
QDQ = f"{NAME}_qdq"
POOL = f"{NAME}_qdq_pool2"  # the same model decoding each batch's images on 2 threads (the default)
CALIBRATION_IMAGES = 32
WARMUP_S = 20.0
TARGETS = [Target("ours qdq int8, 1 decode thread", "ours_qdq", "jpeg"), Target("ours onnx fp32 (JPEG)", "ours_onnx", "jpeg"),
           Target("ours qdq int8, 2 decode threads", "ours_qdq_pool2", "jpeg"),
           Target("reference ts fp32 (JPEG)", "reference_ts", "jpeg"), Target("no-op (JPEG)", "noop", "jpeg")]


def prepare(build_dir: Path, store: Path, threads: int) -> BenchModel:
    """Export ResNet-18 through the CLI with ImageNet preprocessing; quantize; archive ours, reference, no-op."""
    import yaml

    from servekit.build.images import preprocess
    from servekit.build.options import ExportOptions, export_user_model
    from servekit.build.optimize.quantize import onnx_static_qdq_int8

    model_dir = build_dir / NAME
    if not (model_dir / "model.onnx").exists():
        export_user_model(ExportOptions(
            factory="servekit.examples.vision:resnet18_224", random_weights=True, name=NAME, task="classification",
            inputs=("image:float32:3,224,224",), image_resize=256, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
            atol=1e-4, build_dir=build_dir))
    config_path = model_dir / "model-config.yaml"
    document = yaml.safe_load(config_path.read_text())
    document["handler"]["threads"] = threads
    config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    qdq_dir = build_dir / QDQ
    qdq_dir.mkdir(parents=True, exist_ok=True)
    serial = {**document, "handler": {**document["handler"], "decode_threads": 1}}
    (qdq_dir / "model-config.yaml").write_text(yaml.safe_dump(serial, sort_keys=False))
    if not (qdq_dir / "model.onnx").exists():
        prep = HandlerConfig.from_model_yaml(document).signature.images["image"]
        calibration = preprocess(photo_crops(CALIBRATION_IMAGES, seed=1, min_side=224), prep)  # real photos
        onnx_static_qdq_int8(model_dir / "model.onnx", qdq_dir / "model.onnx", {"image": calibration})
    pool_dir = build_dir / POOL
    pool_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(qdq_dir / "model.onnx", pool_dir / "model.onnx")
    document["handler"]["decode_threads"] = 2
    (pool_dir / "model-config.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    run_archive_sh([model_dir, qdq_dir, pool_dir], store, quiet=True)
    bodies_dir = build_dir / "bodies"
    bodies_dir.mkdir(parents=True, exist_ok=True)
    (bodies_dir / "photo.jpg").write_bytes(encode(sample_photos()[0]))
    (bodies_dir / "warmup.json").write_text(json.dumps({"data": [0.0]}))
    archives = {"ours_onnx": f"{NAME}_onnx.mar", "ours_qdq": f"{QDQ}_onnx.mar", "ours_qdq_pool2": f"{POOL}_onnx.mar",
                "reference_ts": archive_reference(f"{NAME}_reference", REFERENCE_HANDLERS / "image_handler.py", store,
                                                  model_dir / "model.pt"),
                "noop": archive_reference("noop", REFERENCE_HANDLERS / "noop_handler.py", store, None)}
    return BenchModel(NAME, archives, {"jpeg": bodies_dir / "photo.jpg", "json": bodies_dir / "warmup.json"}, model_dir,
                      np.zeros(1, np.float32))


def in_process_ceiling(model_file: Path, config: HandlerConfig, body: bytes, batch_size: int, threads: int,
                       seconds: float = 6.0) -> float:
    """Images/s of decode + preprocess + the handler's backend on full batches, without HTTP."""
    prep = config.signature.images["image"]
    backend = load_backend(model_file, None, threads)

    def one_batch() -> None:
        backend.run(prep.to_model([prep.decode_many([body]) for _ in range(batch_size)]))

    one_batch()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 2:
        one_batch()
        calls += 1
    return calls * batch_size / (time.perf_counter() - started)


def run_image_benchmark(build_dir: Path, reports_dir: Path, concurrencies: list[int], duration_s: float,
                        setting: Setting, threads: int = 0) -> dict:
    """Everything side by side in one server; writes reports/bench_images.{md,json}."""
    import yaml

    store = build_dir / "model_store"
    store.mkdir(parents=True, exist_ok=True)
    threads = threads or default_intra_op_threads(setting.workers)
    print(f"==> preparing ResNet-18 archives (handler intra-op threads: {threads})", flush=True)
    bench = prepare(build_dir, store, threads)
    server = start_server(store, build_dir / "server")
    try:
        warm_up_frontend(server.client, bench, max(concurrencies))
        # A batch of 16 ResNet-18 images takes seconds: warm each target for several batches (TorchScript's
        # profiling executor optimises after its first runs) and keep slices long against stale in-flight work.
        results = measure_side_by_side(server.client, bench, TARGETS, setting, concurrencies, duration_s,
                                       warmup_s=WARMUP_S)
    finally:
        server.stop()
    config = HandlerConfig.from_model_yaml(yaml.safe_load((bench.model_dir / "model-config.yaml").read_text()))
    body = bench.bodies["jpeg"].read_bytes()
    print("==> in-process ceilings (decode + preprocess + model, no HTTP)", flush=True)
    ceiling = {"qdq": in_process_ceiling(build_dir / QDQ / "model.onnx", config, body, setting.batch_size, threads),
               "onnx": in_process_ceiling(bench.model_dir / "model.onnx", config, body, setting.batch_size, threads)}
    document = {"setting": {"batch_size": setting.batch_size, "max_batch_delay_ms": setting.max_batch_delay_ms,
                            "workers": setting.workers}, "threads": threads, "cores": available_cores(),
                "duration_s": duration_s, "body_bytes": len(body), "results": as_json(results),
                "in_process_images_per_s": ceiling}
    document["ratios"] = image_ratios(document, concurrencies)
    report = write_report(reports_dir, "bench_images", document, render(document))
    plot(document, reports_dir / "bench_images.png")
    print(report.read_text())
    return document


def image_ratios(document: dict, concurrencies: list[int]) -> dict:
    """Ours (best variant) over the reference and over the in-process ceiling at c=16 (or the nearest below)."""
    c = max((x for x in concurrencies if x <= 16), default=max(concurrencies))
    at = {r["label"]: next(run for run in r["runs"] if run["concurrency"] == c) for r in document["results"]}
    ours = max((label for label in at if label.startswith("ours")), key=lambda label: at[label]["throughput"])
    reference = next(at[t.label] for t in TARGETS if t.kind == "reference_ts")
    noop = next(at[t.label] for t in TARGETS if t.kind == "noop")
    fmt = "qdq" if "qdq" in ours else "onnx"
    return {"concurrency": c, "best_ours": ours,
            "ours_over_reference": at[ours]["throughput"] / reference["throughput"],
            "ours_p99_ms": at[ours]["p99_ms"], "reference_p99_ms": reference["p99_ms"],
            "ours_over_in_process": at[ours]["throughput"] / document["in_process_images_per_s"][fmt],
            "ours_over_noop": at[ours]["throughput"] / noop["throughput"],
            "decode_pool2_over_serial": at[TARGETS[2].label]["throughput"] / at[TARGETS[0].label]["throughput"]}


def render(document: dict) -> str:
    """reports/bench_images.md."""
    s, r = document["setting"], document["ratios"]
    lines = ["# Image benchmark", "",
             f"`servekit bench --images`: ResNet-18 at 3x224x224 (seeded random weights: speed only), a "
             f"{document['body_bytes'] / 1e3:.0f} KB 640x427 JPEG (scikit-learn's photo) per request, batch_size "
             f"{s['batch_size']}, max_batch_delay {s['max_batch_delay_ms']} ms, {s['workers']} worker, "
             f"{document['threads']} intra-op thread(s) for ours, {document['cores']} cores, wrk closed loop, "
             "interleaved rounds.", "",
             "| target | c | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for result in document["results"]:
        for run in result["runs"]:
            lines.append(f"| {result['label']} | {run['concurrency']} | {run['throughput']:.1f} | {run['p50_ms']:.0f} | "
                         f"{run['p99_ms']:.0f} | {run['errors']} |")
    ceiling = document["in_process_images_per_s"]
    lines += ["", f"In-process ceiling (decode + preprocess + model at batch {s['batch_size']}, same threads): "
              f"QDQ INT8 {ceiling['qdq']:.1f} images/s, FP32 {ceiling['onnx']:.1f} images/s.", "",
              f"At c={r['concurrency']}: best of ours ({r['best_ours']}) is **{r['ours_over_reference']:.2f}x** the "
              f"reference handler (p99 {r['ours_p99_ms']:.0f} ms against {r['reference_p99_ms']:.0f} ms) and "
              f"**{r['ours_over_in_process']:.0%}** of its in-process ceiling. Decoding each batch on 2 threads "
              f"instead of 1 served {r['decode_pool2_over_serial']:.2f}x as many images.", ""]
    return "\n".join(lines)


def plot(document: dict, path: Path) -> None:
    """Throughput per target at each concurrency, with the in-process ceiling as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [r["label"] for r in document["results"] if not r["label"].startswith("no-op")]
    values = [next(r for r in document["results"] if r["label"] == label)["runs"][-1]["throughput"] for label in labels]
    ax.barh(labels, values, color=["tab:blue" if "reference" in label else "tab:orange" for label in labels])
    ax.axvline(document["in_process_images_per_s"]["qdq"], color="black", linestyle="--",
               label="in-process ceiling (QDQ INT8, with decode)")
    ax.set_xlabel(f"images/s at c={document['results'][0]['runs'][-1]['concurrency']} (one JPEG per request)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
