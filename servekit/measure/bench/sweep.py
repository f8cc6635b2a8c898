"""`servekit bench --sweep`: try batch_size x max_batch_delay x workers x threads; recommend the best."""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from servekit.measure.bench import artifacts
from servekit.measure.bench.ceilings import in_process_items_per_s
from servekit.measure.bench.run import CONTENT_TYPES, Setting, start_server, warm_up_frontend, wrk_load
from servekit.measure.bench.wrk import WrkResult


SWEPT_FORMATS = ("torchscript", "onnx")  # the sweep serves ONNX; the plain baseline archive needs model.pt


@dataclass(frozen=True)
class SweepPoint:
    """One configuration and what it did."""

    threads: int
    setting: Setting
    result: WrkResult


def run_sweep(model: str, build_dir: Path, reports_dir: Path, batch_sizes: list[int], delays: list[int],
              workers: list[int], threads: list[int], concurrency: int, duration_s: float,
              encoding: str = "npy") -> SweepPoint:
    """Measure every combination of our ONNX archive at one concurrency; write bench_sweep.{md,json}."""
    store = build_dir / "model_store"
    store.mkdir(parents=True, exist_ok=True)
    prepare = {"digits_mlp": artifacts.digits_mlp, "bench_cnn": artifacts.bench_cnn}[model]
    benches = {}
    for count in threads:  # threads live in model-config.yaml, so one archive per count
        benches[count] = prepare(build_dir, store, count, name=f"{model}_t{count}", formats=SWEPT_FORMATS)
    points: list[SweepPoint] = []
    server = start_server(store, build_dir / "server")
    client = server.client
    try:
        warm_up_frontend(client, next(iter(benches.values())), concurrency)
        for count, bench in benches.items():
            for batch_size, delay, worker_count in itertools.product(batch_sizes, delays, workers):
                setting = Setting(batch_size, delay, worker_count)
                name = f"sweep_t{count}_b{batch_size}_d{delay}_w{worker_count}"
                client.register(bench.archives["ours_onnx"], model_name=name, batch_size=batch_size,
                                max_batch_delay_ms=delay, initial_workers=worker_count)
                try:
                    load = wrk_load(client, f"predictions/{name}", bench.bodies[encoding], CONTENT_TYPES[encoding])
                    load(concurrency, 1)  # warm-up, not recorded
                    result = load(concurrency, duration_s)
                finally:
                    client.unregister(name)
                points.append(SweepPoint(count, setting, result))
                print(f"  threads={count} batch_size={batch_size:<3} max_batch_delay={delay:<3} workers={worker_count}: "
                      f"{result.throughput:8.1f} req/s  p50 {result.p50_ms:6.1f}  p99 {result.p99_ms:6.1f} ms  "
                      f"errors {result.errors}", flush=True)
    finally:
        server.stop()
    best = recommend(points)
    bench = benches[best.threads]
    ceiling = in_process_items_per_s(bench.model_dir / "model.onnx", bench.instance, best.setting.batch_size, best.threads)
    write_sweep(points, best, model, concurrency, encoding, reports_dir, ceiling)
    return best


def recommend(points: list[SweepPoint]) -> SweepPoint:
    """Highest error-free throughput; among those within 5 % of it, the lowest p99."""
    clean = [p for p in points if p.result.errors == 0] or points
    top = max(p.result.throughput for p in clean)
    return min((p for p in clean if p.result.throughput >= 0.95 * top), key=lambda p: p.result.p99_ms)


def curl_line(model: str, point: SweepPoint) -> str:
    """The registration a user would send for the recommended settings."""
    s = point.setting
    return (f'curl -X POST -H "Authorization: Bearer $MGMT" "http://127.0.0.1:8081/models?url={model}_onnx.mar'
            f'&batch_size={s.batch_size}&max_batch_delay={s.max_batch_delay_ms}&initial_workers={s.workers}'
            f'&synchronous=true"   # with handler.threads: {point.threads} in model-config.yaml')


def write_sweep(points: list[SweepPoint], best: SweepPoint, model: str, concurrency: int, encoding: str,
                reports_dir: Path, ceiling: float) -> None:
    """bench_sweep.md (table + recommendation) and bench_sweep.json."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"threads": p.threads, **asdict(p.setting), **asdict(p.result), "throughput": p.result.throughput}
            for p in points]
    (reports_dir / "bench_sweep.json").write_text(json.dumps(
        {"model": model, "concurrency": concurrency, "encoding": encoding, "points": rows,
         "recommended": {"threads": best.threads, **asdict(best.setting)},
         "in_process_ceiling_items_per_s": ceiling}, indent=2) + "\n")
    lines = [f"# Batching sweep: {model} (ours, ONNX Runtime, {encoding}), wrk c={concurrency}", "",
             "| threads | batch_size | max_batch_delay ms | workers | req/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: -p.result.throughput):
        mark = " **(recommended)**" if p is best else ""
        lines.append(f"| {p.threads} | {p.setting.batch_size} | {p.setting.max_batch_delay_ms} | {p.setting.workers} | "
                     f"{p.result.throughput:,.0f}{mark} | {p.result.p50_ms:.1f} | {p.result.p99_ms:.1f} | {p.result.errors} |")
    lines += ["", "Recommended (highest error-free throughput; within 5 % of it, lowest p99):", "", "```bash",
              curl_line(model, best), "```", "",
              f"In-process ceiling at the recommended batch size and threads (same backend, no HTTP): {ceiling:,.0f} items/s; "
              f"served: {best.result.throughput:,.0f} req/s = {best.result.throughput / ceiling:.0%} of it. The load "
              "generator (wrk) shares these cores with TorchServe.", ""]
    (reports_dir / "bench_sweep.md").write_text("\n".join(lines))
    print("\n".join(lines))
