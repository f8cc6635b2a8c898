"""Workflow vs in-process composition, measured side by side with wrk on the same server."""
from __future__ import annotations

from pathlib import Path

from servekit.measure.bench.run import CONTENT_TYPES, interleaved, wrk_load
from servekit.measure.bench.wrk import WrkResult
from servekit.serve.client import TorchServeClient


def bench_endpoints(client: TorchServeClient, endpoints: dict[str, str], body: Path, concurrencies: list[int],
                    duration_s: float) -> dict[str, list[WrkResult]]:
    """``endpoints``: label -> path under the inference API (e.g. 'wfpredict/digits_ensemble_wf')."""
    loads = {label: wrk_load(client, path, body, CONTENT_TYPES["npy"]) for label, path in endpoints.items()}
    return interleaved(loads, concurrencies, duration_s)


def ratio_lines(results: dict[str, list[WrkResult]], pairs: list[tuple[str, str]]) -> list[str]:
    """Markdown: throughput and p99 of each (workflow, in-process) pair, and their ratios."""
    lines = ["| composition | concurrency | in-process req/s | workflow req/s | workflow / in-process | "
             "p99 in-process ms | p99 workflow ms |", "|---|---|---|---|---|---|---|"]
    for workflow, in_process in pairs:
        for wf_run, ip_run in zip(results[workflow], results[in_process]):
            ratio = wf_run.throughput / ip_run.throughput if ip_run.throughput else 0.0
            lines.append(f"| {in_process} | {ip_run.concurrency} | {ip_run.throughput:.0f} | {wf_run.throughput:.0f} | "
                         f"**{ratio:.2f}** | {ip_run.p99_ms:.1f} | {wf_run.p99_ms:.1f} |")
    errors = sum(run.errors for runs in results.values() for run in runs)
    lines.append(f"\nwrk errors (non-2xx, timeouts) over all runs: {errors}")
    return lines
