"""`servekit bench --images`: a ResNet-18 at 3x224x224 served with 640x427 JPEG bodies, side by side in one run:
ours ONNX FP32 and the best gated variant (static QDQ INT8, kept only if it agrees with FP32 on real photos), the
image handler TorchServe's docs show (TorchScript FP32) at 1 and at 2 threads, the no-op, LitServe serving the
same ONNX on the same threads (base64 JSON bodies of the same photo), and the in-process ceiling that includes
decode and preprocessing."""
from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from handlers.backends import load_backend
from handlers.config import HandlerConfig
from handlers.cores import available_cores
from servekit.build.archiving import run_archive_sh
from servekit.build.images import encode, photo_crops, sample_photos
from servekit.build.model_dir import seal
from servekit.examples.vision import IMAGENET_MEAN, IMAGENET_STD
from servekit.measure.bench.artifacts import REFERENCE_HANDLERS, archive_reference
from servekit.measure.bench.litserve import LitServeServer, litserve_python
from servekit.measure.bench.run import Setting, chosen_threads, interleaved, start_server
from servekit.measure.bench.wrk import run_wrk
from servekit.measure.reports import write_report

NAME = "bench_resnet18"
QDQ = f"{NAME}_qdq"
CALIBRATION_IMAGES = 32
GATE_IMAGES = 64
GATE_AGREEMENT = 0.95  # QDQ INT8 must give FP32's top-1 class on this share of real photo crops
WARMUP_S = 20.0  # a batch of 16 takes about a second: warm every target for many batches
REFERENCE_THREADS = (1, 2)
LABELS_BY_KIND = {"ours_onnx": "ours ONNX FP32", "ours_qdq": "ours ONNX static QDQ INT8 (gated)",
                  "docs_t1": "docs-style handler, TorchScript FP32, 1 thread",
                  "docs_t2": "docs-style handler, TorchScript FP32, 2 threads",
                  "noop": "no-op handler", "litserve": "LitServe 0.2.19, same ONNX FP32"}


def prepare(build_dir: Path, store: Path) -> dict:
    """Export ResNet-18 with ImageNet preprocessing; quantize and gate; archive ours, the references, the no-op."""
    import yaml

    from servekit.build.images import preprocess
    from servekit.build.options import ExportOptions, export_user_model
    from servekit.build.optimize.quantize import onnx_static_qdq_int8

    model_dir = build_dir / NAME
    if not (model_dir / "model.onnx").exists():
        export_user_model(ExportOptions(
            factory="servekit.examples.vision:resnet18_224", random_weights=True, name=NAME, task="classification",
            inputs=("image:float32:3,224,224",), image_resize=256, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
            atol=1e-4, formats="torchscript,onnx", build_dir=build_dir))
    document = yaml.safe_load((model_dir / "model-config.yaml").read_text())
    prep = HandlerConfig.from_model_yaml(document).signature.images["image"]
    qdq_dir = build_dir / QDQ
    qdq_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_dir / "model-config.yaml", qdq_dir / "model-config.yaml")
    if not (qdq_dir / "model.onnx").exists():
        calibration = preprocess(photo_crops(CALIBRATION_IMAGES, seed=1, min_side=224), prep)  # real photos
        onnx_static_qdq_int8(model_dir / "model.onnx", qdq_dir / "model.onnx", {"image": calibration})
    gate = _gate(model_dir / "model.onnx", qdq_dir / "model.onnx", preprocess(photo_crops(GATE_IMAGES, seed=2,
                                                                                         min_side=224), prep))
    seal(qdq_dir, {"gate": gate})
    print(f"    QDQ INT8 gate: top-1 agreement with FP32 on {GATE_IMAGES} photo crops {gate['agreement']:.0%} "
          f"(needs {GATE_AGREEMENT:.0%}) -> {'pass' if gate['passed'] else 'REJECTED'}", flush=True)
    run_archive_sh([model_dir] + ([qdq_dir] if gate["passed"] else []), store, quiet=True)
    archives = {"ours_onnx": f"{NAME}_onnx.mar",
                "noop": archive_reference("noop", REFERENCE_HANDLERS / "noop_handler.py", store, None)}
    if gate["passed"]:
        archives["ours_qdq"] = f"{QDQ}_onnx.mar"
    for threads in REFERENCE_THREADS:
        archives[f"docs_t{threads}"] = archive_reference(f"{NAME}_docs_t{threads}", REFERENCE_HANDLERS /
                                                         "image_handler.py", store, model_dir / "model.pt", threads)
    bodies_dir = build_dir / "bodies"
    bodies_dir.mkdir(parents=True, exist_ok=True)
    photo = encode(sample_photos()[0])
    (bodies_dir / "photo.jpg").write_bytes(photo)
    (bodies_dir / "photo_base64.json").write_text(json.dumps({"image": base64.b64encode(photo).decode()}))
    return {"model_dir": model_dir, "archives": archives, "gate": gate, "photo": bodies_dir / "photo.jpg",
            "photo_json": bodies_dir / "photo_base64.json"}


def _gate(fp32: Path, int8: Path, images: np.ndarray) -> dict:
    classes = {name: np.asarray(load_backend(path, None, 1).run(images)).argmax(1) for name, path in
               (("fp32", fp32), ("int8", int8))}
    agreement = float((classes["fp32"] == classes["int8"]).mean())
    return {"agreement": agreement, "images": len(images), "passed": agreement >= GATE_AGREEMENT}


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
    """Everything side by side in one server (and one LitServe); writes reports/bench_images.{md,json,png}."""
    import yaml

    store = build_dir / "model_store"
    store.mkdir(parents=True, exist_ok=True)
    print("==> preparing ResNet-18 archives (ours: threads measured per model at worker start)", flush=True)
    prepared = prepare(build_dir, store)
    concurrency = max((c for c in concurrencies if c <= 16), default=max(concurrencies))
    load_before = os.getloadavg()
    server = start_server(store, build_dir / "server")
    client, litserve = server.client, None
    names = {kind: f"{NAME}_{kind}" for kind in prepared["archives"]}
    try:
        for kind, archive in prepared["archives"].items():
            client.register(archive, model_name=names[kind], batch_size=setting.batch_size,
                            max_batch_delay_ms=setting.max_batch_delay_ms, initial_workers=setting.workers)
        chosen = threads or chosen_threads(server.log_dir, names["ours_onnx"]) or available_cores()
        token = client.tokens.inference if client.tokens else ""
        loads = {kind: _load(f"{client.inference_url}/predictions/{names[kind]}", prepared["photo"], "image/jpeg", token)
                 for kind in names}
        if litserve_python() is not None:
            litserve = LitServeServer(prepared["model_dir"] / "model.onnx", "images", chosen, setting.batch_size,
                                      setting.max_batch_delay_ms, build_dir / "litserve.log")
            loads["litserve"] = _load(litserve.url, prepared["photo_json"], "application/json", "")
        else:
            print("    (no LitServe venv: run 'make litserve-venv' for that row)", flush=True)
        print(f"==> serving side by side at c={concurrency}, batch {setting.batch_size} / {setting.max_batch_delay_ms} "
              f"ms; ours chose {chosen} thread(s)", flush=True)
        runs = interleaved(loads, [concurrency], duration_s, warmup_s=WARMUP_S)
    finally:
        if litserve is not None:
            litserve.stop()
        server.stop()
    load_after = os.getloadavg()
    config = HandlerConfig.from_model_yaml(yaml.safe_load((prepared["model_dir"] / "model-config.yaml").read_text()))
    body = prepared["photo"].read_bytes()
    print("==> in-process ceilings (decode + preprocess + model, no HTTP)", flush=True)
    ceiling = {"onnx": in_process_ceiling(prepared["model_dir"] / "model.onnx", config, body, setting.batch_size, chosen)}
    if "ours_qdq" in prepared["archives"]:
        ceiling["qdq"] = in_process_ceiling(build_dir / QDQ / "model.onnx", config, body, setting.batch_size, chosen)
    document = {"setting": {"batch_size": setting.batch_size, "max_batch_delay_ms": setting.max_batch_delay_ms,
                            "workers": setting.workers}, "concurrency": concurrency, "threads": chosen,
                "cores": available_cores(), "duration_s": duration_s, "body_bytes": len(body), "gate": prepared["gate"],
                "load_before": load_before, "load_after": load_after,
                "results": {kind: {**vars(run[0]), "throughput": run[0].throughput} for kind, run in runs.items()},
                "in_process_images_per_s": ceiling}
    document["ratios"] = image_ratios(document)
    report = write_report(reports_dir, "bench_images", document, render(document))
    plot(document, reports_dir / "bench_images.png")
    print(report.read_text())
    return document


def _load(url: str, body: Path, content_type: str, token: str):
    return lambda concurrency, seconds: run_wrk(url, body, content_type, token, concurrency, seconds)


def image_ratios(document: dict) -> dict:
    """The issue's targets: ours over the docs-style handler at its best thread count, over LitServe, etc."""
    results = document["results"]
    docs = max((k for k in results if k.startswith("docs_")), key=lambda k: results[k]["throughput"])
    best = max((k for k in results if k.startswith("ours_")), key=lambda k: results[k]["throughput"])
    fmt = "qdq" if best == "ours_qdq" else "onnx"
    out = {"docs_best": docs, "best_ours": best,
           "fp32_over_docs": results["ours_onnx"]["throughput"] / results[docs]["throughput"],
           "best_over_docs": results[best]["throughput"] / results[docs]["throughput"],
           "fp32_p99_ms": results["ours_onnx"]["p99_ms"], "docs_p99_ms": results[docs]["p99_ms"],
           "best_over_in_process": results[best]["throughput"] / document["in_process_images_per_s"][fmt],
           "docs_t2_over_t1": results["docs_t2"]["throughput"] / results["docs_t1"]["throughput"]}
    if "litserve" in results:
        out["fp32_over_litserve"] = results["ours_onnx"]["throughput"] / results["litserve"]["throughput"]
    return out


def render(document: dict) -> str:
    """reports/bench_images.md."""
    s, r, results, threads = document["setting"], document["ratios"], document["results"], document["threads"]
    lines = ["# Image benchmark", "",
             f"`make bench-images` (`servekit bench --images`): ResNet-18 at 3x224x224 (seeded random weights: speed "
             f"only), a {document['body_bytes'] / 1e3:.0f} KB 640x427 JPEG (scikit-learn's photo) per request, batch "
             f"{s['batch_size']} / {s['max_batch_delay_ms']} ms, {s['workers']} worker, c={document['concurrency']}, "
             f"{document['cores']} cores, wrk closed loop, interleaved rounds, {document['duration_s']:g} s per target. "
             f"Machine load (1-minute average, other agents share the cores): {document['load_before'][0]:.1f} before, "
             f"{document['load_after'][0]:.1f} after.", "",
             "| target | threads | images/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for kind, run in results.items():
        t = {"ours_onnx": threads, "ours_qdq": threads, "litserve": threads, "docs_t1": 1, "docs_t2": 2}.get(kind, "-")
        lines.append(f"| {LABELS_BY_KIND[kind]} | {t} | {run['throughput']:.1f} | {run['p50_ms']:.0f} | "
                     f"{run['p99_ms']:.0f} | {run['errors']} |")
    ceiling, gate = document["in_process_images_per_s"], document["gate"]
    lines += ["", f"Ours chose {threads} intra-op thread(s) (handlers/thread_policy.py); LitServe ran the same count "
              "with base64 JSON bodies of the same photo (its documented way to send an image). In-process ceiling "
              f"(decode + preprocess + model at batch {s['batch_size']}, same threads, no HTTP): FP32 "
              f"{ceiling['onnx']:.1f} images/s" + (f", QDQ INT8 {ceiling['qdq']:.1f}" if "qdq" in ceiling else "") + ".",
              "", f"QDQ INT8 gate: top-1 agreement with FP32 on {gate['images']} real photo crops {gate['agreement']:.0%} "
              f"(needs {GATE_AGREEMENT:.0%}): {'passed' if gate['passed'] else 'rejected, no INT8 row'}.", "",
              f"The docs-style handler served {r['docs_t2_over_t1']:.2f}x as many images on 2 threads as on 1 (torch's "
              "default is every core; its OpenMP threads stall when the frontend and the clients take a core).", "",
              f"Ratios, same run: ours FP32 / docs-style at its best ({r['docs_best']}) **{r['fp32_over_docs']:.2f}x** "
              f"(target 1.8x; p99 {r['fp32_p99_ms']:.0f} against {r['docs_p99_ms']:.0f} ms); best of ours "
              f"({r['best_ours']}) **{r['best_over_docs']:.2f}x** (target 3.5x)"
              + (f"; ours FP32 / LitServe **{r['fp32_over_litserve']:.2f}x** (target 1.3x)" if "fp32_over_litserve" in r
                 else "") + f"; best of ours / its in-process ceiling {r['best_over_in_process']:.0%}.", ""]
    return "\n".join(lines)


def plot(document: dict, path: Path) -> None:
    """Images/s per target, with the in-process ceiling as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in document["results"] if k != "noop"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh([LABELS_BY_KIND[k] for k in kinds], [document["results"][k]["throughput"] for k in kinds],
            color=["tab:orange" if k.startswith("ours") else "tab:blue" for k in kinds])
    ax.axvline(document["in_process_images_per_s"]["onnx"], color="black", linestyle="--",
               label="in-process ceiling (FP32, with decode)")
    ax.set_xlabel(f"images/s at c={document['concurrency']} (one JPEG per request)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
