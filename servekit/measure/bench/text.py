"""`servekit bench --text`: a trained 4-layer, 256-wide BERT with its tokenizer, served with `{"text": ...}`
bodies of realistic lengths (lognormal, median 24 tokens, up to 128), side by side in one run: ours ONNX FP32
and the best gated variant (dynamic INT8), the handler TorchServe's docs show (tokenizer per request, pad to
128, TorchScript FP32) at 1 and at 2 threads, the no-op, LitServe serving the same ONNX on the same threads
with the same bodies, and our pipeline's in-process ceiling."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from handlers.backends import load_backend
from handlers.bodies.request import RequestInput
from handlers.config import HandlerConfig
from handlers.cores import available_cores
from handlers.pipeline import InferencePipeline
from handlers.signature import InputSpec, Signature
from handlers.text_encoder import TextEncoder
from servekit.build.archiving import run_archive_sh
from servekit.build.model_config import MODEL_CONFIG_FILE, Batching
from servekit.build.model_dir import TOKENIZER_FILE, ModelBuild, build_model_dir, seal
from servekit.build.optimize.quantize import onnx_dynamic_int8
from servekit.examples.text_model import LABELS, MAX_LENGTH, SMALL, VOCAB_SIZE, prepare_text_task
from servekit.measure.bench.artifacts import REFERENCE_HANDLERS, archive_reference
from servekit.measure.bench.litserve import LitServeServer, litserve_python
from servekit.measure.bench.run import Setting, chosen_threads, interleaved, start_server
from servekit.measure.bench.wrk import run_wrk
from servekit.measure.reports import write_report
from servekit.measure.tune.bodies import MEDIAN_TOKENS, realistic_texts

NAME = "bench_bert"
BODIES = 64
CONCURRENCY = 16
WARMUP_S = 10.0
GATE_AGREEMENT = 0.99  # the INT8 variant must agree with FP32 on this share of held-out sentences
REFERENCE_THREADS = (1, 2)  # the docs-style handler is measured at each; its best is the baseline
JSON = "application/json"


def prepare(build_dir: Path, store: Path, epochs: int) -> dict:
    """Train, export (ONNX + TorchScript), gate a dynamic INT8 variant, archive ours, the references, the no-op."""
    task = prepare_text_task(build_dir / "data", SMALL, epochs=epochs)
    print(f"    held-out accuracy {task.accuracy:.2%}", flush=True)
    ids = InputSpec("input_ids", (f"1..{MAX_LENGTH}",), "int64", 0, VOCAB_SIZE - 1)
    mask = InputSpec("attention_mask", (f"1..{MAX_LENGTH}",), "int64", 0, 1)
    base = build_dir / NAME
    build = ModelBuild(NAME, Signature((ids, mask)), LABELS, Batching(batch_size=16, max_batch_delay_ms=10),
                       formats=("torchscript", "onnx"), tokenizer=task.tokenizer_path)
    build_model_dir(task.model, build, dict(task.test_inputs), base, atol=1e-4)
    int8 = build_dir / f"{NAME}_int8"
    int8.mkdir(parents=True, exist_ok=True)
    onnx_dynamic_int8(base / "model.onnx", int8 / "model.onnx")
    for name in (MODEL_CONFIG_FILE, TOKENIZER_FILE):
        shutil.copyfile(base / name, int8 / name)
    gate = _gate(base / "model.onnx", int8 / "model.onnx", task)
    seal(int8, {"gate": gate})
    print(f"    INT8 gate: agreement {gate['agreement']:.2%} (needs {GATE_AGREEMENT:.0%}), accuracy "
          f"{gate['accuracy_int8']:.2%} vs {gate['accuracy_fp32']:.2%} -> {'pass' if gate['passed'] else 'REJECTED'}")
    run_archive_sh([base] + ([int8] if gate["passed"] else []), store, quiet=True)
    archives = {"ours_fp32": f"{NAME}_onnx.mar", "noop": archive_reference("noop", REFERENCE_HANDLERS / "noop_handler.py",
                                                                           store, None)}
    if gate["passed"]:
        archives["ours_int8"] = f"{NAME}_int8_onnx.mar"
    for threads in REFERENCE_THREADS:
        archives[f"docs_t{threads}"] = archive_reference(f"{NAME}_docs_t{threads}", REFERENCE_HANDLERS / "text_handler.py",
                                                         store, base / "model.pt", threads, (base / TOKENIZER_FILE,))
    return {"task": task, "base": base, "archives": archives, "gate": gate}


def _gate(fp32: Path, int8: Path, task) -> dict:
    """Top-1 agreement and accuracy of INT8 against FP32 on the held-out sentences."""
    predicted = {name: np.asarray(load_backend(path, None, 1).run_named(task.test_inputs)[0]).argmax(1)
                 for name, path in (("fp32", fp32), ("int8", int8))}
    agreement = float((predicted["int8"] == predicted["fp32"]).mean())
    return {"agreement": agreement, "accuracy_fp32": float((predicted["fp32"] == task.test_labels).mean()),
            "accuracy_int8": float((predicted["int8"] == task.test_labels).mean()),
            "passed": agreement >= GATE_AGREEMENT}


def write_bodies(directory: Path, tokenizer: Path) -> list[Path]:
    """BODIES sentences of realistic lengths as ``{"text": ...}`` files."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for idx, text in enumerate(realistic_texts(tokenizer, BODIES, high=MAX_LENGTH)):
        path = directory / f"text_{idx:03d}.json"
        path.write_text(json.dumps({"text": text}))
        paths.append(path)
    return paths


def in_process(model_dir: Path, bodies: list[Path], threads: int, batch_size: int, seconds: float = 6.0) -> dict:
    """Our whole pipeline (decode, tokenize, length-aware sub-batches, model, encode) on batches of the bodies,
    no HTTP: requests/s and the padding efficiency those batches get."""
    import yaml

    config = HandlerConfig.from_model_yaml(yaml.safe_load((model_dir / MODEL_CONFIG_FILE).read_text()))
    pipeline = InferencePipeline(config, load_backend(model_dir / "model.onnx", None, threads),
                                 text_encoder=TextEncoder(model_dir / TOKENIZER_FILE, config.signature))
    requests = [RequestInput(path.read_bytes(), JSON) for path in bodies]
    batches = [requests[i:i + batch_size] for i in range(0, len(requests) - batch_size + 1, batch_size)]
    pipeline.run(batches[0])
    served, real, computed, started = 0, 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            _, times = pipeline.run(batch)
            served, real, computed = served + len(batch), real + times.real_tokens, computed + times.computed_tokens
    return {"requests_per_s": served / (time.perf_counter() - started), "padding_efficiency": real / computed}


def padding_without_sub_batches(model_dir: Path, bodies: list[Path], batch_size: int) -> dict:
    """Real / computed tokens had each batch been padded to its longest (before issue 23) or to 128 (the
    docs-style handler), and the bodies' mean length in tokens."""
    import yaml

    config = HandlerConfig.from_model_yaml(yaml.safe_load((model_dir / MODEL_CONFIG_FILE).read_text()))
    encoder = TextEncoder(model_dir / TOKENIZER_FILE, config.signature)
    lengths = [len(arrays["input_ids"][0]) for arrays in
               encoder.encode([[json.loads(path.read_text())["text"]] for path in bodies])]
    groups = [lengths[i:i + batch_size] for i in range(0, len(lengths) - batch_size + 1, batch_size)]
    return {"padded_to_longest": sum(sum(g) for g in groups) / sum(len(g) * max(g) for g in groups),
            "padded_to_max": float(np.mean(lengths)) / MAX_LENGTH, "mean_tokens": float(np.mean(lengths))}


def run_text_benchmark(build_dir: Path, reports_dir: Path, duration_s: float, setting: Setting,
                       epochs: int = 4) -> dict:
    """Everything side by side in one server (and one LitServe); writes reports/bench_text.{md,json}."""
    store = build_dir / "model_store"
    store.mkdir(parents=True, exist_ok=True)
    print("==> training and exporting the 4-layer, 256-wide BERT; gating its INT8 variant", flush=True)
    prepared = prepare(build_dir, store, epochs)
    bodies = write_bodies(build_dir / "bodies", prepared["base"] / TOKENIZER_FILE)
    load_before = os.getloadavg()
    server = start_server(store, build_dir / "server")
    litserve = None
    client = server.client
    names = {kind: f"{NAME}_{kind}" for kind in prepared["archives"]}
    try:
        for kind, archive in prepared["archives"].items():
            client.register(archive, model_name=names[kind], batch_size=setting.batch_size,
                            max_batch_delay_ms=setting.max_batch_delay_ms, initial_workers=setting.workers)
        threads = chosen_threads(server.log_dir, names["ours_fp32"]) or available_cores()
        token = client.tokens.inference if client.tokens else ""
        loads = {kind: _load(f"{client.inference_url}/predictions/{names[kind]}", bodies, token) for kind in names}
        if litserve_python() is not None:
            litserve = LitServeServer(prepared["base"] / "model.onnx", "text", threads, setting.batch_size,
                                      setting.max_batch_delay_ms, build_dir / "litserve.log",
                                      tokenizer=prepared["base"] / TOKENIZER_FILE)
            loads["litserve"] = _load(litserve.url, bodies, "")
        else:
            print("    (no LitServe venv: run 'make litserve-venv' for that row)", flush=True)
        print(f"==> serving side by side at c={CONCURRENCY}, batch {setting.batch_size} / {setting.max_batch_delay_ms} ms; "
              f"ours chose {threads} thread(s)", flush=True)
        runs = interleaved(loads, [CONCURRENCY], duration_s, warmup_s=WARMUP_S)
    finally:
        if litserve is not None:
            litserve.stop()
        server.stop()
    load_after = os.getloadavg()
    print("==> in-process ceiling (our pipeline, no HTTP)", flush=True)
    ceiling = in_process(prepared["base"], bodies, threads, setting.batch_size)
    document = {"setting": {"batch_size": setting.batch_size, "max_batch_delay_ms": setting.max_batch_delay_ms,
                            "workers": setting.workers}, "concurrency": CONCURRENCY, "duration_s": duration_s,
                "cores": available_cores(), "ours_threads": threads, "median_tokens": MEDIAN_TOKENS,
                "load_before": load_before, "load_after": load_after, "gate": prepared["gate"],
                "results": {kind: {**vars(run[0]), "throughput": run[0].throughput} for kind, run in runs.items()},
                "in_process": ceiling,
                "padding": padding_without_sub_batches(prepared["base"], bodies, setting.batch_size)}
    document["ratios"] = text_ratios(document)
    report = write_report(reports_dir, "bench_text", document, render(document))
    print(report.read_text())
    return document


def _load(url: str, bodies: list[Path], token: str):
    return lambda concurrency, seconds: run_wrk(url, bodies, JSON, token, concurrency, seconds)


def text_ratios(document: dict) -> dict:
    """The issue's targets: ours over the docs-style handler at its best thread count, over LitServe, etc."""
    results = document["results"]
    docs = max((k for k in results if k.startswith("docs_")), key=lambda k: results[k]["throughput"])
    best = max((k for k in results if k.startswith("ours_")), key=lambda k: results[k]["throughput"])
    out = {"docs_best": docs, "best_ours": best,
           "fp32_over_docs": results["ours_fp32"]["throughput"] / results[docs]["throughput"],
           "best_over_docs": results[best]["throughput"] / results[docs]["throughput"],
           "fp32_over_noop": results["ours_fp32"]["throughput"] / results["noop"]["throughput"],
           "fp32_over_in_process": results["ours_fp32"]["throughput"] / document["in_process"]["requests_per_s"]}
    if "litserve" in results:
        out["fp32_over_litserve"] = results["ours_fp32"]["throughput"] / results["litserve"]["throughput"]
    return out


LABELS_BY_KIND = {"ours_fp32": "ours ONNX FP32", "ours_int8": "ours ONNX dynamic INT8 (gated)",
                  "docs_t1": "docs-style handler, TorchScript FP32, pad to 128, 1 thread",
                  "docs_t2": "docs-style handler, TorchScript FP32, pad to 128, 2 threads",
                  "noop": "no-op handler", "litserve": "LitServe 0.2.19, same ONNX FP32"}


def render(document: dict) -> str:
    """reports/bench_text.md."""
    s, r, results = document["setting"], document["ratios"], document["results"]
    threads = document["ours_threads"]
    lines = ["# Text benchmark", "",
             f"`make bench-text` (`servekit bench --text`): a 4-layer, 256-wide BERT trained on the synthetic topic task, "
             f"its tokenizer.json in the archive; {BODIES} `{{\"text\": ...}}` bodies of lognormal length (median "
             f"{document['median_tokens']} tokens, up to 128) cycled by wrk at c={document['concurrency']}; batch "
             f"{s['batch_size']} / {s['max_batch_delay_ms']} ms, {s['workers']} worker; {document['cores']} cores; "
             f"interleaved rounds, {document['duration_s']:g} s per target. Machine load (1-minute average, other "
             f"agents share the cores): {document['load_before'][0]:.1f} before, {document['load_after'][0]:.1f} after.",
             "", "| target | threads | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for kind, run in results.items():
        t = {"ours_fp32": threads, "ours_int8": threads, "litserve": threads, "docs_t1": 1, "docs_t2": 2}.get(kind, "-")
        lines.append(f"| {LABELS_BY_KIND[kind]} | {t} | {run['throughput']:.1f} | {run['p50_ms']:.0f} | "
                     f"{run['p99_ms']:.0f} | {run['errors']} |")
    ceiling, gate = document["in_process"], document["gate"]
    lines += ["", f"Ours chose {threads} intra-op thread(s) (handlers/thread_policy.py); LitServe ran the same count. "
              f"In-process ceiling (our pipeline: decode, tokenize, length-aware sub-batches, model, encode; no HTTP): "
              f"{ceiling['requests_per_s']:.1f} req/s.", "",
              f"Padding efficiency (real / computed tokens) of batches of {s['batch_size']} of these bodies: "
              f"**{ceiling['padding_efficiency']:.2f}** with length-aware sub-batches, against "
              f"{document['padding']['padded_to_longest']:.2f} padded to each batch's longest and "
              f"{document['padding']['padded_to_max']:.2f} padded to 128 (the docs-style handler); the bodies average "
              f"{document['padding']['mean_tokens']:.1f} tokens.", "",
              f"INT8 gate: top-1 agreement with FP32 {gate['agreement']:.2%} (needs {GATE_AGREEMENT:.0%}), accuracy "
              f"{gate['accuracy_int8']:.2%} vs FP32 {gate['accuracy_fp32']:.2%}: "
              f"{'passed' if gate['passed'] else 'rejected, no INT8 row'}.", "",
              f"Ratios, same run: ours FP32 / docs-style at its best ({r['docs_best']}) **{r['fp32_over_docs']:.2f}x** "
              f"(target 2x); best of ours ({r['best_ours']}) **{r['best_over_docs']:.2f}x** (target 3.5x)"
              + (f"; ours FP32 / LitServe **{r['fp32_over_litserve']:.2f}x** (target 1.3x)" if "fp32_over_litserve" in r
                 else "") + f"; ours FP32 / no-op {r['fp32_over_noop']:.2f}; ours FP32 / in-process "
              f"{r['fp32_over_in_process']:.0%}.", ""]
    return "\n".join(lines)
