"""`servekit text-model`: the BERT-style model (4 layers, 256 wide) trained on the synthetic topic task,
exported, its ONNX Runtime dynamic INT8 variant measured against FP32 (speed at several sequence
lengths on 1 thread, agreement, accuracy), and served throughput at 16 concurrent clients with
batching against batch size 1 -> reports/text_model.{md,json}."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from handlers.backends import load_backend
from handlers.signature import InputSpec, Signature
from servekit.build.model_dir import TOKENIZER_FILE, ModelBuild, build_model_dir, seal
from servekit.build.variants import Gates
from servekit.serve.load import run_load
from servekit.build.model_config import MODEL_CONFIG_FILE, Batching
from servekit.build.optimize.quantize import onnx_dynamic_int8
from servekit.examples.text_model import LABELS, MAX_LENGTH, SMALL, VOCAB_SIZE, prepare_text_task
from servekit.measure.reports import write_report

TIMED_LENGTHS = (16, 64, 128)
TIMED_BATCH_SIZES = (1, 8)
TIMING_ROUNDS, CALLS_PER_ROUND = 20, 5
SERVED_CONCURRENCY = 16
SERVED_SECONDS = 10.0


def _time_backends(paths: dict[str, Path], threads: int) -> dict[str, dict[str, float]]:
    """p50 ms per (variant, length, batch) through the handler's ORT backend, interleaved round by round."""
    backends = {name: load_backend(path, None, threads) for name, path in paths.items()}
    rng = np.random.default_rng(0)
    batches = {(n, b): {"input_ids": rng.integers(3, VOCAB_SIZE, size=(b, n)), "attention_mask": np.ones((b, n), np.int64)}
               for n in TIMED_LENGTHS for b in TIMED_BATCH_SIZES}
    samples: dict[tuple[str, int, int], list[float]] = {(v, n, b): [] for v in paths for (n, b) in batches}
    for backend in backends.values():
        for batch in batches.values():
            backend.run_named(batch)
    for _ in range(TIMING_ROUNDS):
        for name, backend in backends.items():
            for (n, b), batch in batches.items():
                for _ in range(CALLS_PER_ROUND):
                    started = time.perf_counter()
                    backend.run_named(batch)
                    samples[(name, n, b)].append((time.perf_counter() - started) * 1000.0)
    return {name: {f"len{n}_b{b}": float(np.median(samples[(name, n, b)])) for (n, b) in batches} for name in paths}


def _served(build_dir: Path, work_dir: Path, texts: list[str]) -> dict[str, float]:
    """Requests/s at 16 concurrent clients: batch_size 16 (max delay 5 ms) against batch_size 1, INT8 ONNX."""
    from servekit.build.archiving import run_archive_sh
    from servekit.serve.torchserve import TorchServe

    store = work_dir / "store"
    run_archive_sh([build_dir / "bert_small_int8"], store, quiet=True)
    server = TorchServe(store, work_dir / "torchserve")
    client = server.start()
    results = {}
    try:
        for label, batch_size in (("batch_16", 16), ("batch_1", 1)):
            name = f"bert_{label}"
            client.register("bert_small_int8_onnx.mar", batch_size=batch_size, max_batch_delay_ms=5, model_name=name)
            bodies = [json.dumps({"text": t}).encode() for t in texts]
            run_load(lambda body: client.predict_raw(name, body, "application/json"), bodies[:64], SERVED_CONCURRENCY)
            sent, started = 0, time.perf_counter()
            while time.perf_counter() - started < SERVED_SECONDS:
                answers = run_load(lambda body: client.predict_raw(name, body, "application/json"), bodies,
                                   SERVED_CONCURRENCY).answers
                if any(a.status_code != 200 for a in answers):
                    raise RuntimeError(f"{name}: a request failed during the load test")
                sent += len(answers)
            results[label] = sent / (time.perf_counter() - started)
            client.unregister(name)
    finally:
        server.stop()
    return results


def run_text_report(work_dir: Path, reports_dir: Path | None, threads: int = 1, epochs: int = 4) -> dict:
    """Train, export, quantize, measure; write reports/text_model.{md,json}."""
    print("==> training the 4-layer, 256-wide BERT on the synthetic topic task")
    task = prepare_text_task(work_dir / "data", SMALL, epochs=epochs)
    print(f"    held-out accuracy {task.accuracy:.2%}")
    ids = InputSpec("input_ids", (f"1..{MAX_LENGTH}",), "int64", 0, VOCAB_SIZE - 1)
    mask = InputSpec("attention_mask", (f"1..{MAX_LENGTH}",), "int64", 0, 1)
    build = ModelBuild("bert_small", Signature((ids, mask)), LABELS, Batching(), formats=("onnx",),
                       tokenizer=task.tokenizer_path)
    base = work_dir / "build" / "bert_small"
    build_model_dir(task.model, build, dict(task.test_inputs), base, atol=1e-4)
    int8_dir = work_dir / "build" / "bert_small_int8"
    staging = work_dir / "build" / ".bert_small_int8.staging"  # archive.sh never sees it half-built
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    int8_path = onnx_dynamic_int8(base / "model.onnx", staging / "model.onnx")
    for name in (MODEL_CONFIG_FILE, TOKENIZER_FILE):
        shutil.copyfile(base / name, staging / name)
    paths = {"onnx_fp32": base / "model.onnx", "onnx_int8": int8_path}
    print(f"==> timing FP32 and INT8 in-process, ORT on {threads} thread(s)")
    timings = _time_backends(paths, threads)
    logits = {name: np.asarray(load_backend(path, None, threads).run_named(task.test_inputs)[0]) for name, path in paths.items()}
    predicted = {name: value.argmax(1) for name, value in logits.items()}
    quality = {"accuracy_fp32": float((predicted["onnx_fp32"] == task.test_labels).mean()),
               "accuracy_int8": float((predicted["onnx_int8"] == task.test_labels).mean()),
               "agreement": float((predicted["onnx_int8"] == predicted["onnx_fp32"]).mean()),
               "max_abs_logit_diff": float(np.abs(logits["onnx_int8"] - logits["onnx_fp32"]).max()),
               "heldout": len(task.test_labels)}
    sizes = {name: path.stat().st_size for name, path in paths.items()}
    served, skipped = None, gate_int8(quality, staging, int8_dir)
    if skipped is None:
        print("==> served throughput, INT8, 16 concurrent clients: batching vs batch size 1")
        served = _served(work_dir / "build", work_dir, task.test_texts)
    else:
        print(f"    INT8 not served: {skipped}")
    document = {"threads": threads, "timings_p50_ms": timings, "quality": quality, "served_req_per_s": served,
                "served_skipped": skipped, "sizes_bytes": sizes}
    if write_report(reports_dir, "text_model", document, _markdown(document)) is not None:
        print(f"wrote {reports_dir / 'text_model.md'}")
    return document


def gate_int8(quality: dict, staging: Path, int8_dir: Path) -> str | None:
    """Seal the INT8 folder when it agrees with FP32 as the variant gates ask (archive.sh packs only what a
    validation.json vouches for) and move it into place; else remove it and say why (None when sealed)."""
    gates = Gates()
    shutil.rmtree(int8_dir, ignore_errors=True)
    if quality["agreement"] < gates.min_agreement:
        shutil.rmtree(staging, ignore_errors=True)
        return f"top-1 agreement with FP32 {quality['agreement']:.2%} < {gates.min_agreement:.0%}"
    seal(staging, {"variants": {"onnx_int8": {"reference": "onnx_fp32", **quality}}})
    staging.rename(int8_dir)
    return None


def _markdown(doc: dict) -> str:
    t, q, s = doc["timings_p50_ms"], doc["quality"], doc["served_req_per_s"]
    rows = "\n".join(
        f"| {n} | {b} | {t['onnx_fp32'][f'len{n}_b{b}']:.2f} | {t['onnx_int8'][f'len{n}_b{b}']:.2f} | "
        f"{t['onnx_fp32'][f'len{n}_b{b}'] / t['onnx_int8'][f'len{n}_b{b}']:.2f}x |"
        for n in TIMED_LENGTHS for b in TIMED_BATCH_SIZES)
    return f"""# BERT-style text model: dynamic INT8 and served throughput

transformers' `BertForSequenceClassification` from a `BertConfig` (4 layers, hidden 256, 4 heads,
random init), trained briefly on the synthetic topic task of `servekit/examples/text_model.py`. Written by
`servekit text-model`.

## ONNX Runtime FP32 vs dynamic INT8, in-process, {doc['threads']} thread(s), p50 latency (ms)

| sequence length | batch | FP32 | INT8 | INT8 speed-up |
|---|---|---|---|---|
{rows}

Sizes: FP32 {doc['sizes_bytes']['onnx_fp32'] / 1e6:.1f} MB, INT8 {doc['sizes_bytes']['onnx_int8'] / 1e6:.1f} MB.

## Agreement on {q['heldout']} held-out sentences

FP32 accuracy {q['accuracy_fp32']:.2%}, INT8 accuracy {q['accuracy_int8']:.2%}, top-1 agreement
{q['agreement']:.2%}, worst logit difference {q['max_abs_logit_diff']:.3f}.

{_served_markdown(s, doc.get("served_skipped"))}"""


def _served_markdown(s: dict | None, skipped: str | None) -> str:
    if s is None:
        return f"## Served\n\nNot measured: the INT8 model failed its gate ({skipped}).\n"
    return f"""## Served, INT8 archive with text in, {SERVED_CONCURRENCY} concurrent Python clients, {SERVED_SECONDS:g} s each

| registration | requests/s |
|---|---|
| batch_size 16, max_batch_delay 5 ms | {s['batch_16']:.1f} |
| batch_size 1 | {s['batch_1']:.1f} |

Batching gives {s['batch_16'] / s['batch_1']:.2f}x. The clients run on the same cores as the server.
"""
