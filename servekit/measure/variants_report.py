"""`servekit variants`: build, gate, archive and measure every variant; write reports/variants.*"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from handlers.config import CLASSIFICATION
from handlers.cores import available_cores
from servekit.measure import deploy_size
from servekit.build.archiving import run_archive_sh
from servekit.build.model_dir import build_model_dir
from servekit.examples.data import load_digits_split
from servekit.build.export import TORCHSCRIPT_FILE, ExportSpec
from servekit.measure.timing import Timing, time_artifacts
from servekit.build.model_config import Batching
from servekit.examples.models import DEMO_MODELS
from servekit.build.variants import (ARCHIVE_SUFFIX, Gates, VariantInputs, VariantResult, build_variants, judge,
                               prune_empty_family_dirs)
from servekit.measure.reports import write_report

TIMED_BATCH_SIZES = (1, 32)
MiB = 1024 * 1024
# Run-to-run noise on ~20 µs calls is about ±15 %: flag only clear slow-downs.
SLOWER_THAN_FP32 = 0.85
FP32_OF_FORMAT = {"torchscript": "ts_fp32", "onnx": "onnx_fp32", "aoti": "aoti_fp32"}
FORMAT_COLOURS = {"torchscript": "tab:blue", "onnx": "tab:orange", "aoti": "tab:green"}


def mar_path(result: VariantResult, model_store: Path) -> Path:
    """Where archive.sh put this variant's archive."""
    return model_store / f"{result.path.parent.name}_{ARCHIVE_SUFFIX[result.fmt]}.mar"


def demo_variant_inputs(build_dir: Path) -> list[VariantInputs]:
    """Both demo models, exported first if ``build_dir`` does not hold them yet."""
    from servekit.examples.demo import demo_build_inputs

    split = load_digits_split()
    jobs = []
    for name, spec in DEMO_MODELS.items():
        model, build, heldout = demo_build_inputs(name, build_dir, Batching())
        if not (build_dir / name / TORCHSCRIPT_FILE).exists():
            build_model_dir(model, build, heldout, build_dir / name)
        jobs.append(VariantInputs(name, model, ExportSpec(spec.input_name, spec.input_shape), build_dir / name,
                                  split.x_train.reshape(-1, *spec.input_shape), split.y_train, heldout, split.y_test))
    return jobs


def run_variants(jobs: list[VariantInputs], model_store: Path, reports_dir: Path | None, gates: Gates, prune_amount: float,
                 finetune_epochs: int, threads: int | None = None) -> list[dict]:
    """Build, gate, archive and time every variant of every job; returns the rows written to variants.json."""
    # In-process, nothing else needs the cores: each worker's share of them.
    threads = threads or max(1, available_cores() // Batching().max_workers)
    rows: list[dict] = []
    for inputs in jobs:
        print(f"\n==> {inputs.name}: building variants (prune amount {prune_amount:.0%}, fine-tune {finetune_epochs} epochs)")
        results = build_variants(inputs, inputs.base_dir.parent, prune_amount, finetune_epochs)
        judge(results, inputs.model, inputs.x_test, inputs.y_test, gates, inputs.spec.signature.names, inputs.task)
        prune_empty_family_dirs(results)
        for r in results:
            verdict = "pass" if r.passed else f"REJECTED: {r.reason}"
            quality = (f"acc {r.accuracy:.2%}  agreement {r.agreement:.2%}" if inputs.task == CLASSIFICATION
                       else f"R^2 {_fmt(r.r2, '.4f')}  worst rel. error {_fmt(r.relative_error, '.3g')}")
            print(f"  {r.variant:<17} {quality}  max|diff| vs fp32 {r.max_abs_diff_vs_fp32:.3g}  -> {verdict}")
        passing = [r for r in results if r.passed]
        run_archive_sh(sorted({r.path.parent for r in passing}), model_store, quiet=True)
        print(f"  archived {len(passing)} passing variants; timing in-process with {threads} intra-op threads")
        timings = time_artifacts([r.path for r in passing], inputs.x_test, TIMED_BATCH_SIZES, threads)
        rows.extend(_row(r, timings.get(r.path), model_store, threads) for r in results)
    _add_ratios(rows)
    sizes = [deploy_size.measure("TorchServe (torch + torchserve + onnxruntime)", deploy_size.TORCHSERVE_RUNTIME, True),
             deploy_size.measure("plain ONNX Runtime (onnxruntime + numpy)", deploy_size.ORT_RUNTIME, False)]
    write_reports(rows, sizes, reports_dir, gates, prune_amount, finetune_epochs, threads,
                  sorted({len(j.y_test) for j in jobs}))
    return rows


def _row(r: VariantResult, timing: dict[int, Timing] | None, model_store: Path, threads: int) -> dict:
    mar = mar_path(r, model_store)
    row = {
        "model": r.model, "variant": r.variant, "format": r.fmt, "passed": r.passed, "reason": r.reason,
        "file_bytes": r.path.stat().st_size if r.path.exists() else None,
        "mar_bytes": mar.stat().st_size if r.passed and mar.exists() else None,
        "accuracy": r.accuracy, "agreement": r.agreement, "max_abs_diff_vs_fp32": r.max_abs_diff_vs_fp32,
        "relative_error": r.relative_error, "r2": r.r2,
        "reference": r.reference, "rtol": r.rtol, "atol": r.atol,
        "worst_diff_vs_reference": max((c.max_abs_diff for c in r.output_check), default=None),
        "sparsity": r.sparsity, "sparsity_per_layer": r.sparsity_per_layer, "threads": threads,
    }
    for size, t in (timing or {}).items():
        row[f"p50_ms_b{size}"] = t.p50_ms
        row[f"items_per_s_b{size}"] = t.items_per_s
    return row


def _add_ratios(rows: list[dict]) -> None:
    """Speed-up and size ratio against the same model's TorchScript FP32, measured in the same run.

    Also against FP32 of the same format, so a runtime switch (TorchScript -> ORT or AOTInductor)
    is not mistaken for the gain of quantizing.
    """
    base = {(r["model"], r["variant"]): r for r in rows if r["variant"] in FP32_OF_FORMAT.values()}
    for r in rows:
        b = base[(r["model"], "ts_fp32")]
        same = base.get((r["model"], FP32_OF_FORMAT[r["format"]]), {})
        for size in TIMED_BATCH_SIZES:
            key = f"p50_ms_b{size}"
            if r.get(key):
                r[f"speedup_b{size}"] = b[key] / r[key]
                if same.get(key):
                    r[f"speedup_same_format_b{size}"] = same[key] / r[key]
        if r["file_bytes"]:
            r["size_ratio"] = r["file_bytes"] / b["file_bytes"]


def write_reports(rows: list[dict], sizes: list[deploy_size.DeploymentSize], reports_dir: Path | None, gates: Gates,
                  prune_amount: float, finetune_epochs: int, threads: int, heldout_count: list[int]) -> None:
    """variants.json, variants.md and variants.png."""
    document = {"gates": asdict(gates), "prune_amount": prune_amount, "finetune_epochs": finetune_epochs,
                "threads": threads, "cpu_count": available_cores(), "heldout_count": heldout_count, "variants": rows,
                "deployment_sizes": [{"name": s.name, "total_bytes": s.total, "distributions": s.distributions,
                                      "extra": s.extra} for s in sizes]}
    if write_report(reports_dir, "variants", document, render_markdown(document)) is None:
        return
    plot(rows, reports_dir / "variants.png")
    print(f"\nwrote {reports_dir}/variants.md, variants.json, variants.png")


def _quality(row: dict) -> str:
    """Two table cells: a classifier's accuracy and agreement, or another task's R^2 and worst relative error."""
    if row.get("accuracy") is not None:
        return f"{row['accuracy']:.2%} | {row['agreement']:.2%}"
    return f"R^2 {_fmt(row.get('r2'), '.4f')} | rel. error {_fmt(row.get('relative_error'), '.3g')}"


def _fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else format(value, pattern)


def render_markdown(doc: dict) -> str:
    """The human-readable report."""
    gates = doc["gates"]
    lines = [
        "# Optimized variants",
        "",
        f"Generated by `servekit variants`. Gates: at most {gates['max_accuracy_drop']:g} accuracy point below FP32 and "
        f"≥ {gates['min_agreement']:.0%} top-1 agreement with FP32, on held-out data ({'/'.join(map(str, doc['heldout_count']))} samples) "
        f"(other tasks: worst output error ≤ {gates.get('max_relative_error', 0.05):g} of FP32's largest value and "
        f"R^2 ≥ {gates.get('min_r2', 0.99):g} against FP32). "
        f"Pruning: global L1 unstructured, {doc['prune_amount']:.0%} of all conv/linear weights, "
        f"fine-tune {doc['finetune_epochs']} epochs. Latency: in-process through the handler's own backends, "
        f"{doc['threads']} intra-op thread(s) on {doc['cpu_count']} cores, p50 of interleaved rounds "
        "(all variants timed side by side in one run). Speed-up and size ratio are against TorchScript FP32 of the same model.",
        "",
        "| model | variant | passed | file KiB | .mar KiB | accuracy (R^2) | agreement (rel. error) | max abs diff vs FP32 | "
        "output check (reference, rtol/atol, worst diff) | p50 b1 ms | p50 b32 ms | items/s b32 | speed-up b1 | speed-up b32 "
        "| b32 vs FP32 of same format | size ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["variants"]:
        check = f"{r['reference']}, {r['rtol']:g}/{r['atol']:g}, {_fmt(r['worst_diff_vs_reference'], '.2e')}"
        lines.append(
            f"| {r['model']} | {r['variant']} | {'yes' if r['passed'] else 'NO'} | "
            f"{_fmt(r['file_bytes'] and r['file_bytes'] / 1024, '.1f')} | {_fmt(r['mar_bytes'] and r['mar_bytes'] / 1024, '.1f')} | "
            f"{_quality(r)} | {r['max_abs_diff_vs_fp32']:.3g} | {check} | "
            f"{_fmt(r.get('p50_ms_b1'), '.3f')} | {_fmt(r.get('p50_ms_b32'), '.3f')} | {_fmt(r.get('items_per_s_b32'), ',.0f')} | "
            f"{_fmt(r.get('speedup_b1'), '.2f')} | {_fmt(r.get('speedup_b32'), '.2f')} | "
            f"{_fmt(r.get('speedup_same_format_b32'), '.2f')} | {_fmt(r.get('size_ratio'), '.2f')} |")
    lines += ["", "## Findings (computed from the table)", ""] + findings(doc["variants"])
    rejected = [r for r in doc["variants"] if not r["passed"]]
    lines += ["", "## Rejected variants", ""]
    lines += [f"- {r['model']} {r['variant']}: {r['reason']}" for r in rejected] or ["None."]
    pruned = [r for r in doc["variants"] if r["variant"] == "ts_pruned"]
    lines += ["", "## Sparsity after pruning", ""]
    for r in pruned:
        layers = ", ".join(f"{k} {v:.1%}" for k, v in (r["sparsity_per_layer"] or {}).items())
        lines.append(f"- {r['model']}: global {r['sparsity']:.1%} ({layers})")
    lines += ["", "## Deployment size", "", "| deployment | installed size | largest parts |", "|---|---|---|"]
    for s in doc["deployment_sizes"]:
        parts = sorted({**s["distributions"], **s["extra"]}.items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"| {s['name']} | {s['total_bytes'] / MiB:,.0f} MiB | "
                     + ", ".join(f"{k} {v / MiB:,.0f} MiB" for k, v in parts) + " |")
    a, b = doc["deployment_sizes"]
    lines += ["", f"Ratio: the TorchServe deployment is {a['total_bytes'] / b['total_bytes']:.1f}× the plain ONNX Runtime one. "
              "TorchServe forces torch (its worker imports it, even for an ONNX model) and a Java runtime for its frontend; "
              "a plain ONNX Runtime server needs neither. Sizes are of installed files (CPU builds here), not of container images.", ""]
    return "\n".join(lines)


def findings(rows: list[dict]) -> list[str]:
    """The best passing variant per model, and variants slower than FP32 of their own format."""
    out = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model and r["passed"] and r.get("speedup_b32")]
        fp32 = next(r for r in mine if r["variant"] == "ts_fp32")
        best = max(mine, key=lambda r: r["speedup_b32"])
        loss = (fp32["accuracy"] - best["accuracy"]) * 100 if fp32["accuracy"] is not None else None
        out.append(f"- {model}: fastest passing variant at batch 32 is {best['variant']}, "
                   f"{best['speedup_b32']:.2f}× TorchScript FP32 ({_fmt(best.get('speedup_same_format_b32'), '.2f')}× FP32 "
                   "of its own format), "
                   + (f"{loss:+.2f} accuracy points lost" if loss is not None else f"R^2 {best['r2']:.4f} against FP32")
                   + f", {best['size_ratio']:.2f}× the size.")
        slower = [r for r in mine if r.get("speedup_same_format_b32", 1.0) < SLOWER_THAN_FP32]
        for r in slower:
            fp32_file = next((f["file_bytes"] for f in mine if f["variant"] == FP32_OF_FORMAT[r["format"]]), None)
            smaller = "smaller" if fp32_file and r["file_bytes"] < 0.9 * fp32_file else "no smaller (the compiled code dominates)"
            out.append(f"  - {r['variant']} is slower than FP32 of its own format at batch 32 "
                       f"({r['speedup_same_format_b32']:.2f}×): {smaller}, not faster, on this CPU.")
        out.extend(_aoti_findings(model, {r["variant"]: r for r in mine}))
    out.append("- Unstructured pruning leaves dense tensors: the file keeps its size and the kernels their speed; "
               "only the compressed .mar shrinks. It pays only with sparse kernels or structured pruning.")
    fp16 = [r for r in rows if r["variant"] in ("ts_fp16", "onnx_fp16") and r.get("speedup_same_format_b32")]
    ratios = ", ".join(f"{r['model']} {r['variant']} {r['speedup_same_format_b32']:.2f}×" for r in fp16)
    out.append(f"- FP16 vs FP32 of the same format at batch 32 on this CPU: {ratios}. FP16 halves the file; a CPU "
               "without native FP16 arithmetic emulates it, so expect no speed-up here. "
               "`servekit gpu-report` (reports/gpu.md) measures FP16 on a GPU, where it can pay.")
    return out


def _aoti_findings(model: str, timed: dict[str, dict]) -> list[str]:
    """AOTInductor, TorchScript's successor, against TorchScript and ONNX Runtime FP32, and its INT8 against its FP32."""
    aoti = timed.get("aoti_fp32")
    if aoti is None:
        return []
    line = (f"  - {model} aoti_fp32 vs ts_fp32 / onnx_fp32: "
            + ", ".join(f"batch {size} {_fmt(aoti.get(f'speedup_b{size}'), '.2f')}× / "
                        f"{_fmt(_ratio(timed.get('onnx_fp32'), aoti, size), '.2f')}×" for size in TIMED_BATCH_SIZES))
    int8 = timed.get("aoti_pt2e_int8")
    if int8 is not None:
        line += ("; aoti_pt2e_int8 vs aoti_fp32: "
                 + ", ".join(f"batch {size} {_fmt(_ratio(aoti, int8, size), '.2f')}×" for size in TIMED_BATCH_SIZES))
    return [line + " (above 1: faster)."]


def _ratio(slower: dict | None, faster: dict, size: int) -> float | None:
    """How many times faster ``faster`` ran than ``slower`` at one batch size (p50 ratio)."""
    key = f"p50_ms_b{size}"
    return slower[key] / faster[key] if slower and slower.get(key) and faster.get(key) else None
MIN_MARKER_AREA = 10.0


def plot(rows: list[dict], path: Path) -> None:
    """Per model: latency at batch 32 (log) against file size; marker area grows with accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        points = [r for r in rows if r["model"] == model and r["passed"] and r.get("p50_ms_b32")]
        for r in points:
            colour = FORMAT_COLOURS[r["format"]]
            # Area grows with accuracy above 90 %; a model below 90 % still gets a visible marker
            # (a negative area made matplotlib fail on the first model under 90 %).
            accuracy = r["accuracy"] if r["accuracy"] is not None else r["r2"]  # a regressor's R^2 against FP32
            ax.scatter(r["file_bytes"] / 1024, r["p50_ms_b32"], s=max(MIN_MARKER_AREA, (accuracy * 100 - 90) * 40),
                       c=colour, alpha=0.6)
            ax.annotate(f"{r['variant']} {accuracy:.1%}", (r["file_bytes"] / 1024, r["p50_ms_b32"]),
                        fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("artifact size (KiB)")
        ax.set_ylabel("p50 latency at batch 32 (ms, in-process, log)")
        ax.set_title(f"{model}: blue TorchScript, orange ONNX Runtime, green AOTInductor")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
