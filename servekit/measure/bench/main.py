"""One command: build, serve, load, compare, and write reports/bench.{md,json,png}."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from handlers.cores import available_cores
from servekit.measure.bench import artifacts
from servekit.measure.bench.run import (Setting, Target, TargetResult, as_json, ceilings, chosen_threads,
                                        measure_side_by_side, start_server, warm_up_frontend)
from servekit.measure.reports import write_report

# (label, archive kind, encoding): what runs side by side for each model.
MLP_TARGETS = [Target("ours ts (JSON)", "ours_ts", "json"), Target("ours onnx (JSON)", "ours_onnx", "json"),
               Target("ours aoti (JSON)", "ours_aoti", "json"),
               Target("ours onnx (npy)", "ours_onnx", "npy"), Target("plain ts (JSON)", "plain_ts", "json"),
               Target("no-op (JSON)", "noop", "json")]
CNN_TARGETS = [Target("ours onnx (npy)", "ours_onnx", "npy"), Target("ours ts (npy)", "ours_ts", "npy"),
               Target("ours aoti (npy)", "ours_aoti", "npy"),
               Target("ours onnx (JSON)", "ours_onnx", "json"), Target("plain ts (JSON)", "plain_ts", "json"),
               Target("no-op (npy)", "noop", "npy")]


def run_benchmark(build_dir: Path, reports_dir: Path, concurrencies: list[int], duration_s: float,
                  setting: Setting, decode_input: bool = True, models: tuple[str, ...] = ("digits_mlp", "bench_cnn"),
                  threads: int = 0) -> dict:
    """Everything side by side in one run and one server; returns the JSON document written."""
    store = build_dir / "model_store"
    store.mkdir(parents=True, exist_ok=True)
    print(f"==> preparing archives (handler intra-op threads: {threads or 'measured per model at worker start'})",
          flush=True)
    prepared = {"digits_mlp": lambda: artifacts.digits_mlp(build_dir, store, threads),
                "bench_cnn": lambda: artifacts.bench_cnn(build_dir, store, threads)}
    benches = {name: prepared[name]() for name in models}
    results: list[TargetResult] = []
    server = start_server(store, build_dir / "server", decode_input)
    try:
        warm_up_frontend(server.client, next(iter(benches.values())), max(concurrencies))
        for name, bench in benches.items():
            print(f"==> {name}: batch_size={setting.batch_size}, max_batch_delay={setting.max_batch_delay_ms} ms, "
                  f"workers={setting.workers}, {duration_s:g} s per concurrency", flush=True)
            # A model torch.export cannot capture has no .pt2 archive, so no AOTInductor target.
            targets = [t for t in (MLP_TARGETS if name == "digits_mlp" else CNN_TARGETS) if t.kind in bench.archives]
            results.extend(measure_side_by_side(server.client, bench, targets, setting, concurrencies, duration_s))
    finally:
        server.stop()
    # What the workers chose (handlers/thread_policy.py), so the in-process ceiling runs on the same threads.
    threads = threads or chosen_threads(server.log_dir, f"{next(iter(benches))}_ours_onnx_json") or 1
    document = {"setting": asdict(setting), "threads": threads, "cores": available_cores(), "duration_s": duration_s,
                "decode_input_request": decode_input, "results": as_json(results),
                "ceilings": {name: ceilings(bench, setting, threads) for name, bench in benches.items()}}
    document["ratios"] = ratios(results, document["ceilings"], concurrencies)
    from servekit.measure.bench.report import plot, render_markdown

    report = write_report(reports_dir, "bench", document, render_markdown(document))
    plot(document, reports_dir / "bench.png")
    print(report.read_text())
    return document


def ratios(results: list[TargetResult], ceiling: dict[str, dict[str, float]], concurrencies: list[int]) -> dict:
    """The headline ratios per model, at the highest concurrency of 16 or below, and at each side's best."""
    out = {}
    by = {(r.model, r.label): r for r in results}
    c = max((x for x in concurrencies if x <= 16), default=max(concurrencies))
    for model in sorted({r.model for r in results}):
        ours = [r for r in results if r.model == model and r.label.startswith("ours")]
        best_ours = max(ours, key=lambda r: r.best().throughput)
        plain = next(r for r in results if r.model == model and r.label.startswith("plain"))
        noop = next(r for r in results if r.model == model and r.label.startswith("no-op"))
        fmt = best_ours.label.split()[1]  # "ours onnx (npy)" -> "onnx"
        at_c = {label: by[(model, label)].at(c) for label in (best_ours.label, plain.label, noop.label)}
        out[model] = {
            "best_ours": best_ours.label,
            "concurrency": c,
            "ours_over_plain_at_c": at_c[best_ours.label].throughput / at_c[plain.label].throughput,
            "ours_over_noop_at_c": at_c[best_ours.label].throughput / at_c[noop.label].throughput,
            "ours_p99_ms_at_c": at_c[best_ours.label].p99_ms,
            "plain_p99_ms_at_c": at_c[plain.label].p99_ms,
            "ours_over_plain_best": best_ours.best().throughput / plain.best().throughput,
            "ours_over_in_process_best": best_ours.best().throughput / ceiling[model][f"in_process_{fmt}"],
            "npy_over_json_decode": ceiling[model]["npy_us"] / ceiling[model]["json_us"],
        }
        for label in {r.label for r in ours}:
            r = by[(model, label)].at(c)
            out[model][f"{label} / no-op at c"] = r.throughput / at_c[noop.label].throughput
    return out
