"""Serve each handler kind in a real TorchServe, drive it with wrk, and compare side by side."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from servekit.measure.bench.artifacts import BenchModel
from servekit.measure.bench.ceilings import decode_cost_us, in_process_items_per_s
from servekit.measure.bench.wrk import WrkResult, run_wrk
from servekit.serve.client import NPY_CONTENT_TYPE, TorchServeClient
from servekit.serve.torchserve import TorchServe

CONTENT_TYPES = {"json": "application/json", "npy": NPY_CONTENT_TYPE, "jpeg": "image/jpeg"}
WARMUP_S = 2.0


@dataclass(frozen=True)
class Setting:
    """TorchServe registration settings for one measurement."""

    batch_size: int = 16
    max_batch_delay_ms: int = 5
    workers: int = 1


@dataclass
class TargetResult:
    """One handler kind + encoding, served with one setting, at every concurrency."""

    model: str
    label: str
    archive: str
    encoding: str
    setting: Setting
    runs: list[WrkResult] = field(default_factory=list)

    def best(self) -> WrkResult:
        """The run with the highest throughput."""
        return max(self.runs, key=lambda r: r.throughput)

    def at(self, concurrency: int) -> WrkResult | None:
        """The run at one concurrency."""
        return next((r for r in self.runs if r.concurrency == concurrency), None)


@dataclass(frozen=True)
class Target:
    """One handler kind with one encoding, registered under its own name."""

    label: str
    kind: str
    encoding: str


ROUNDS = 3


def measure_side_by_side(client: TorchServeClient, bench: BenchModel, targets: list[Target], setting: Setting,
                         concurrencies: list[int], duration_s: float, rounds: int = ROUNDS,
                         warmup_s: float = WARMUP_S) -> list[TargetResult]:
    """Register every target at once, then measure them in interleaved rounds (see ``interleaved``)."""
    names = {t: f"{bench.name}_{t.kind}_{t.encoding}" for t in targets}
    results = {t: TargetResult(bench.name, t.label, bench.archives[t.kind], t.encoding, setting) for t in targets}
    for target, name in names.items():
        client.register(bench.archives[target.kind], model_name=name, batch_size=setting.batch_size,
                        max_batch_delay_ms=setting.max_batch_delay_ms, initial_workers=setting.workers)
    loads = {t: wrk_load(client, f"predictions/{names[t]}", bench.bodies[t.encoding], CONTENT_TYPES[t.encoding])
             for t in targets}
    try:
        runs = interleaved(loads, concurrencies, duration_s, rounds, warmup_s)
        for target in targets:
            results[target].runs.extend(runs[target])
    finally:
        for name in names.values():
            client.unregister(name)
    return list(results.values())


Load = Callable[[int, float], WrkResult]  # (concurrency, seconds) -> one wrk run


def wrk_load(client: TorchServeClient, path: str, body: Path, content_type: str) -> Load:
    """wrk POSTing ``body`` to ``path`` under the inference API, with the inference token."""
    token = client.tokens.inference if client.tokens else ""
    url = f"{client.inference_url}/{path}"
    return lambda concurrency, seconds: run_wrk(url, body, content_type, token, concurrency=concurrency,
                                                duration_s=seconds)


def interleaved(loads: dict[Any, Load], concurrencies: list[int], duration_s: float,
                rounds: int = ROUNDS, warmup_s: float = WARMUP_S) -> dict[Any, list[WrkResult]]:
    """Warm every target up, then at each concurrency run them in round-robin slices (A B C A B C ...).

    The slices share the machine's drift between targets, so the ratios between them are fair
    even when absolute numbers wander. Returns one pooled run per concurrency per target.
    """
    for load in loads.values():
        load(max(concurrencies), warmup_s)
    results: dict[Any, list[WrkResult]] = {key: [] for key in loads}
    for concurrency in concurrencies:
        slices: dict[Any, list[WrkResult]] = {key: [] for key in loads}
        for _ in range(rounds):
            for key, load in loads.items():
                slices[key].append(load(concurrency, duration_s / rounds))
        for key in loads:
            run = combine(slices[key])
            results[key].append(run)
            label = getattr(key, "label", key)
            print(f"    {label:<22} c={concurrency:<3} {run.throughput:8.1f} req/s  p50 {run.p50_ms:7.2f}  "
                  f"p99 {run.p99_ms:7.2f} ms  errors {run.errors}", flush=True)
    return results


def combine(runs: list[WrkResult]) -> WrkResult:
    """Pool interleaved slices: total requests over total time; median of the slices' percentiles."""
    def median(values: list[float]) -> float:
        return float(np.median(values))

    return WrkResult(runs[0].concurrency, sum(r.requests for r in runs), sum(r.duration_s for r in runs),
                     sum(r.errors for r in runs), median([r.p50_ms for r in runs]), median([r.p90_ms for r in runs]),
                     median([r.p99_ms for r in runs]))


JVM_WARMUP_S = 6.0


def start_server(store: Path, workdir: Path, decode_input: bool = True) -> TorchServe:
    """A TorchServe for benchmarking; ``decode_input=False`` sets TS_DECODE_INPUT_REQUEST=false."""
    env = {} if decode_input else {"TS_DECODE_INPUT_REQUEST": "false"}
    server = TorchServe(store, workdir, env=env)
    server.start()
    return server


def warm_up_frontend(client: TorchServeClient, bench: BenchModel, concurrency: int) -> None:
    """Drive the no-op handler until the JVM has compiled its hot paths.

    Without this the first target measured pays for the frontend's JIT warm-up (seen: 2x more
    frontend CPU per request than later targets), which would bias every comparison.
    """
    client.register(bench.archives["noop"], model_name="jvm_warmup", batch_size=16, max_batch_delay_ms=5)
    try:
        wrk_load(client, "predictions/jvm_warmup", bench.bodies["json"], CONTENT_TYPES["json"])(concurrency, JVM_WARMUP_S)
    finally:
        client.unregister("jvm_warmup")


def ceilings(bench: BenchModel, setting: Setting, threads: int) -> dict[str, float]:
    """In-process items/s of every format served at the served batch size and thread count, and decode cost."""
    result = {f"in_process_{fmt}": in_process_items_per_s(bench.model_dir / f"model.{ext}", bench.instance,
                                                          setting.batch_size, threads)
              for fmt, ext in (("ts", "pt"), ("onnx", "onnx"), ("aoti", "pt2")) if f"ours_{fmt}" in bench.archives}
    result.update(decode_cost_us(bench.bodies["json"], bench.bodies["npy"], _input_name(bench)))
    return result


def _input_name(bench: BenchModel) -> str:
    import yaml

    return yaml.safe_load((bench.model_dir / "model-config.yaml").read_text())["handler"]["input"]["name"]


def as_json(results: list[TargetResult]) -> list[dict]:
    """Serializable rows."""
    return [{**{k: v for k, v in asdict(r).items() if k != "runs"},
             "runs": [{**asdict(run), "throughput": run.throughput} for run in r.runs]} for r in results]


THREADS_LINE = r"threads for {name}: (\d+) intra-op"  # what handlers/handler.py logs when a worker starts


def chosen_threads(log_dir: Path, model_name: str) -> int | None:
    """The intra-op threads a worker of ``model_name`` chose at start (from TorchServe's model log), if any."""
    import re

    log = Path(log_dir) / "model_log.log"
    if not log.exists():
        return None
    found = re.findall(THREADS_LINE.format(name=re.escape(model_name)), log.read_text(errors="replace"))
    return int(found[-1]) if found else None
