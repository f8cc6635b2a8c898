"""`servekit soak`: sustained load for minutes; worker memory, errors and latency must stay flat."""
from __future__ import annotations

from pathlib import Path

import psutil

from servekit.measure.bench import artifacts
from servekit.measure.bench.run import CONTENT_TYPES, warm_up_frontend, wrk_load
from servekit.measure.reliability import worker_pids
from servekit.serve.torchserve import TorchServe
from servekit.measure.reports import write_report

SLICE_S = 30
RSS_GROWTH_LIMIT = 0.10


def run_soak(build_dir: Path, reports_dir: Path, minutes: float, concurrency: int = 16) -> dict:
    """wrk on the CNN (npy) in 30 s slices; after each, the worker RSS and the slice's percentiles."""
    store = build_dir / "model_store"
    store.mkdir(parents=True, exist_ok=True)
    bench = artifacts.bench_cnn(build_dir, store, formats=("torchscript", "onnx"))  # soak serves ONNX only
    server = TorchServe(store, build_dir / "server")
    client = server.start()
    slices = []
    try:
        warm_up_frontend(client, bench, concurrency)
        client.register(bench.archives["ours_onnx"], model_name="soak", batch_size=16, max_batch_delay_ms=5)
        load = wrk_load(client, "predictions/soak", bench.bodies["npy"], CONTENT_TYPES["npy"])
        for index in range(max(2, round(minutes * 60 / SLICE_S))):
            run = load(concurrency, SLICE_S)
            rss = sum(psutil.Process(pid).memory_info().rss for pid in worker_pids(client, "soak"))
            slices.append({"slice": index, "requests": run.requests, "errors": run.errors, "req_s": run.throughput,
                           "p50_ms": run.p50_ms, "p99_ms": run.p99_ms, "worker_rss_mib": rss / 2**20})
            print(f"  {index * SLICE_S:>5}s: {run.throughput:7.1f} req/s  p50 {run.p50_ms:6.1f}  p99 {run.p99_ms:6.1f} ms  "
                  f"errors {run.errors}  worker RSS {rss / 2**20:7.1f} MiB", flush=True)
    finally:
        server.stop()
    warm = slices[0]["worker_rss_mib"]  # the first slice is the warm-up
    doc = {"minutes": minutes, "concurrency": concurrency, "slices": slices,
           "rss_growth_after_warmup": (slices[-1]["worker_rss_mib"] - warm) / warm,
           "errors": sum(s["errors"] for s in slices), "requests": sum(s["requests"] for s in slices)}
    doc["passed"] = doc["errors"] == 0 and doc["rss_growth_after_warmup"] < RSS_GROWTH_LIMIT
    lines = [f"# Soak: {minutes:g} min of wrk c={concurrency} on the 3x64x64 CNN (ours, ONNX Runtime, npy)", "",
             f"{doc['requests']:,} requests, {doc['errors']} errors; worker RSS growth after the first slice: "
             f"{doc['rss_growth_after_warmup']:+.1%} (limit {RSS_GROWTH_LIMIT:.0%}) -> {'PASS' if doc['passed'] else 'FAIL'}", "",
             "| t (s) | req/s | p50 ms | p99 ms | errors | worker RSS MiB |", "|---|---|---|---|---|---|"]
    lines += [f"| {s['slice'] * SLICE_S} | {s['req_s']:,.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['errors']} | "
              f"{s['worker_rss_mib']:.1f} |" for s in slices]
    write_report(reports_dir, "soak", doc, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return doc
