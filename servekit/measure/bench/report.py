"""bench.md and bench.png from the benchmark's JSON document."""
from __future__ import annotations

from pathlib import Path


def render_markdown(doc: dict) -> str:
    """Tables per model plus the headline ratios."""
    s = doc["setting"]
    lines = ["# Serving benchmark", "",
             f"TorchServe 0.12 on {doc['cores']} cores; batch_size={s['batch_size']}, max_batch_delay={s['max_batch_delay_ms']} ms, "
             f"workers={s['workers']}, handler intra-op threads={doc['threads']}; wrk closed loop, {doc['duration_s']:g} s per "
             f"concurrency after a warm-up; one instance per request; TS_DECODE_INPUT_REQUEST="
             f"{'true (default)' if doc['decode_input_request'] else 'false'}. All rows measured in one run, one server.", ""]
    for model in sorted({r["model"] for r in doc["results"]}):
        rows = [r for r in doc["results"] if r["model"] == model]
        concurrencies = [run["concurrency"] for run in rows[0]["runs"]]
        lines += [f"## {model}", "", "| handler (encoding) | " + " | ".join(f"c={c} req/s (p50 / p99 ms)" for c in concurrencies)
                  + " | errors |", "|---|" + "---|" * (len(concurrencies) + 1)]
        for r in rows:
            cells = [f"{run['throughput']:,.0f} ({run['p50_ms']:.1f} / {run['p99_ms']:.1f})" for run in r["runs"]]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {sum(run['errors'] for run in r['runs'])} |")
        c = doc["ceilings"][model]
        lines += ["", f"In-process ceiling (same backend, batch {s['batch_size']}, {doc['threads']} threads, no HTTP): "
                  f"TorchScript {c['in_process_ts']:,.0f} items/s, ONNX Runtime {c['in_process_onnx']:,.0f} items/s"
                  + (f", AOTInductor {c['in_process_aoti']:,.0f} items/s" if "in_process_aoti" in c else "") + ". "
                  f"Decode of one request: JSON {c['json_us']:,.0f} µs (worker's json.loads + array), npy {c['npy_us']:,.0f} µs.", ""]
        r = doc["ratios"][model]
        lines += [f"Ratios (best of ours = {r['best_ours']}, at c={r['concurrency']} unless 'best'):", "",
                  f"- ours / plain: {r['ours_over_plain_at_c']:.2f}× (best vs best: {r['ours_over_plain_best']:.2f}×)",
                  f"- ours / no-op: {r['ours_over_noop_at_c']:.0%}",
                  f"- ours / in-process ceiling (best vs ceiling): {r['ours_over_in_process_best']:.0%}",
                  f"- p99 ours {r['ours_p99_ms_at_c']:.1f} ms vs plain {r['plain_p99_ms_at_c']:.1f} ms",
                  f"- decode npy / JSON: {r['npy_over_json_decode']:.3f}", ""]
        lines += [f"- {k}: {v:.0%}" for k, v in sorted(r.items()) if k.endswith("/ no-op at c")] + [""]
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> None:
    """Throughput vs concurrency and p99 vs concurrency, one column per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in doc["results"]})
    fig, axes = plt.subplots(2, len(models), figsize=(7 * len(models), 9), squeeze=False)
    for col, model in enumerate(models):
        for r in (r for r in doc["results"] if r["model"] == model):
            conc = [run["concurrency"] for run in r["runs"]]
            axes[0][col].plot(conc, [run["throughput"] for run in r["runs"]], marker="o", label=r["label"])
            axes[1][col].plot(conc, [run["p99_ms"] for run in r["runs"]], marker="o", label=r["label"])
        ceiling = max(v for k, v in doc["ceilings"][model].items() if k.startswith("in_process_"))
        axes[0][col].axhline(ceiling, color="grey", linestyle="--", label="in-process ceiling")
        for row, ylabel in ((0, "requests/s"), (1, "p99 latency (ms)")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent connections")
            ax.set_ylabel(ylabel)
            ax.set_title(model)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[1][col].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
