"""reports/tune_NAME.{md,json,png}: every point the tuner tried (and the grid, when measured), the winner."""
from __future__ import annotations

from pathlib import Path

from servekit.measure.reports import write_report
from servekit.measure.tune.run import TuneResult
from servekit.measure.tune.search import Measured, winner


def write_tune_report(result: TuneResult, reports_dir: Path) -> Path:
    """Write the three files; returns the markdown's path."""
    name = f"tune_{result.model}"
    path = write_report(reports_dir, name, result.as_json(), render(result, f"{name}.png"))
    plot(result, reports_dir / f"{name}.png")
    return path


def render(result: TuneResult, plot_name: str) -> str:
    """The markdown."""
    bound = f", p99 bound {result.p99_bound_ms:g} ms" if result.p99_bound_ms else ""
    best, default = result.best, result.default
    lines = [f"# servekit tune: {result.model}", "",
             f"{result.bodies}; {result.concurrency} concurrent clients (wrk, closed loop), {result.duration_s:g} s a "
             f"point after a warm-up, {result.cores} core(s){bound}. Machine load (1-minute average) "
             f"{result.load_before[0]:.2f} before, {result.load_after[0]:.2f} after.", "",
             f"**Best: {best.point.describe()}: {best.throughput:.1f} req/s, p99 {best.p99_ms:.0f} ms: "
             f"{best.throughput / default.throughput:.2f}x the default** ({default.point.describe()}, "
             f"{default.throughput:.1f} req/s), found in {len(result.tried)} points and {result.search_s:.0f} s.", ""]
    if result.written_to:
        lines += [f"Written into `{Path(result.written_to).name}` (batchSize, maxBatchDelay, minWorkers, maxWorkers, "
                  "handler.threads" + (", handler.decode_threads" if best.point.decode_threads else "") + ").", ""]
    if result.grid:
        grid_best = winner(result.grid, result.p99_bound_ms)
        lines += [f"Full grid, measured once to judge the search: {len(result.grid)} points in {result.grid_s:.0f} s; "
                  f"its best {grid_best.point.describe()} served {grid_best.throughput:.1f} req/s. The search's pick "
                  f"is **{best.throughput / grid_best.throughput:.0%}** of it in "
                  f"**{result.search_s / result.grid_s:.0%}** of the grid's time.", ""]
    lines += ["![throughput against p99 of every point](" + plot_name + ")", "",
              "| # | batch | delay ms | workers | threads | decode threads | req/s | p50 ms | p99 ms | errors |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(str(i), m, m is best) for i, m in enumerate(result.tried)]
    if result.grid:
        lines += ["", "## The full grid", "",
                  "| # | batch | delay ms | workers | threads | decode threads | req/s | p50 ms | p99 ms | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [_row(str(i), m, False) for i, m in enumerate(result.grid)]
    return "\n".join(lines) + "\n"


def _row(index: str, m: Measured, best: bool) -> str:
    p = m.point
    mark = " (best)" if best else ""
    return (f"| {index}{mark} | {p.batch_size} | {p.max_batch_delay_ms} | {p.workers} | {p.threads} | "
            f"{p.decode_threads or '-'} | {m.throughput:.1f} | {m.p50_ms:.0f} | {m.p99_ms:.0f} | {m.errors} |")


def plot(result: TuneResult, path: Path) -> None:
    """Throughput against p99 for every point; the default and the winner marked, the bound drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if result.grid:
        ax.scatter([m.p99_ms for m in result.grid], [m.throughput for m in result.grid], s=12, color="lightgray",
                   label="full grid")
    ax.scatter([m.p99_ms for m in result.tried], [m.throughput for m in result.tried], s=20, color="tab:blue",
               label="tried by the search")
    ax.scatter([result.default.p99_ms], [result.default.throughput], s=80, marker="s", color="tab:gray", label="default")
    ax.scatter([result.best.p99_ms], [result.best.throughput], s=120, marker="*", color="tab:orange", label="best")
    if result.p99_bound_ms:
        ax.axvline(result.p99_bound_ms, color="tab:red", linestyle="--", label="p99 bound")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("requests/s")
    ax.set_title(f"servekit tune: {result.model}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
