"""`servekit tune ARCHIVE`: measure the archive as built, search from there, write the winner into its
model-config.yaml and a report with every point tried."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from handlers.config import HandlerConfig
from handlers.cores import available_cores
from servekit.build.archiving import run_archive_sh
from servekit.measure.tune.archive_config import read_config, with_settings, write_config
from servekit.measure.tune.bodies import generated_bodies, user_bodies
from servekit.measure.tune.search import (BATCH_SIZES, MAX_BATCH_DELAYS_MS, Measured, Point, SearchSpace,
                                          pattern_search, winner)
from servekit.measure.tune.served import ServedMeasure
from servekit.serve.torchserve import TorchServe

DEFAULT_CONCURRENCY = 16
DEFAULT_DURATION_S = 6.0
DEFAULT_MAX_POINTS = 24
ARCHIVE_PREFERENCE = ("onnx", "ts", "aoti")  # a build folder's format tuned when it holds several


@dataclass
class TuneResult:
    """Everything the report shows."""

    model: str
    bodies: str
    cores: int
    concurrency: int
    duration_s: float
    p99_bound_ms: float | None
    default: Measured
    tried: list[Measured]
    best: Measured
    search_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    written_to: str = ""
    grid: list[Measured] = field(default_factory=list)
    grid_s: float = 0.0

    def as_json(self) -> dict:
        """For NAME.json."""
        def row(m: Measured) -> dict:
            return {**asdict(m.point), "throughput": m.throughput, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                    "errors": m.errors, "seconds": m.seconds}

        return {"model": self.model, "bodies": self.bodies, "cores": self.cores, "concurrency": self.concurrency,
                "duration_s": self.duration_s, "p99_bound_ms": self.p99_bound_ms, "default": row(self.default),
                "tried": [row(m) for m in self.tried], "best": row(self.best), "search_s": self.search_s,
                "load_before": self.load_before, "load_after": self.load_after, "written_to": self.written_to,
                "grid": [row(m) for m in self.grid], "grid_s": self.grid_s}


def run_tune(target: Path, work_dir: Path, bodies_dir: Path | None = None, p99_bound_ms: float | None = None,
             concurrency: int = DEFAULT_CONCURRENCY, duration_s: float = DEFAULT_DURATION_S,
             max_points: int = DEFAULT_MAX_POINTS, grid: bool = False, write: bool = True) -> TuneResult:
    """Tune ``target`` (a .mar, or a build folder as `servekit export` writes it) on this machine."""
    target = Path(target)
    work_dir.mkdir(parents=True, exist_ok=True)
    store = work_dir / "store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir()
    archive = _archive_of(target, work_dir / "archives")
    document = read_config(archive)
    bodies = user_bodies(bodies_dir) if bodies_dir else generated_bodies(document, _tokenizer(archive, work_dir),
                                                                        work_dir / "bodies")
    config = HandlerConfig.from_model_yaml(document)
    space = search_space(available_cores(), concurrency, int(document["batchSize"]), int(document["maxBatchDelay"]),
                         bool(config.signature.images))
    print(f"==> tuning {archive.name} on {space.cores} core(s): {bodies.description}, {concurrency} concurrent "
          f"clients, {duration_s:g} s a point{f', p99 <= {p99_bound_ms:g} ms' if p99_bound_ms else ''}", flush=True)
    load_before = os.getloadavg()
    server = TorchServe(store, work_dir / "server")
    server.start()
    started = time.perf_counter()
    try:
        measure = ServedMeasure(server, archive, bodies, concurrency, duration_s)
        default, start = measure.default()
        _say("default", default)
        if not space.valid(start):
            raise ValueError(f"the archive's own settings ({start.describe()}) fall outside the search space")
        tried = pattern_search(space, start, measure, p99_bound_ms, max_points,
                               on_result=lambda m: _say("tried", m), known=[default])
        search_s = time.perf_counter() - started
        grid_results, grid_s = [], 0.0
        if grid:
            print(f"==> the full grid ({len(space.grid())} points), to judge the search", flush=True)
            grid_started = time.perf_counter()
            grid_results = [_said(measure(point)) for point in space.grid()]
            grid_s = time.perf_counter() - grid_started
    finally:
        server.stop()
    best = winner(tried, p99_bound_ms)
    result = TuneResult(archive.stem, bodies.description, space.cores, concurrency, duration_s, p99_bound_ms, default,
                        tried, best, search_s, load_before, os.getloadavg(), grid=grid_results, grid_s=grid_s)
    print(f"==> best: {best.point.describe()}: {best.throughput:.1f} req/s (p99 {best.p99_ms:.0f} ms), "
          f"{best.throughput / default.throughput:.2f}x the default; {len(tried)} points in {search_s:.0f} s", flush=True)
    if write:
        result.written_to = str(write_winner(target, archive, best.point))
        print(f"    written into {result.written_to}", flush=True)
    return result


def search_space(cores: int, concurrency: int, batch_size: int, delay_ms: int, images: bool) -> SearchSpace:
    """Batch sizes up to what the clients can fill, the usual delays, and the archive's own values."""
    batch_sizes = tuple(sorted({b for b in BATCH_SIZES if b <= max(concurrency, 1)} | {batch_size}))
    delays = tuple(sorted(set(MAX_BATCH_DELAYS_MS) | {delay_ms}))
    return SearchSpace(cores, batch_sizes, delays, tuple(range(1, max(2, cores) + 1)) if images else ())


def write_winner(target: Path, archive: Path, point: Point) -> Path:
    """The winning settings into ``target``: the .mar itself, or the build folder's model-config.yaml (resealed,
    so archive.sh packs it; re-run archive.sh to rebuild its archives)."""
    document = with_settings(read_config(archive), point.batch_size, point.max_batch_delay_ms, point.workers,
                             point.threads, point.decode_threads)
    if target.is_dir():
        import yaml

        from servekit.build.model_config import MODEL_CONFIG_FILE
        from servekit.build.model_dir import seal

        (target / MODEL_CONFIG_FILE).write_text(yaml.safe_dump(document, sort_keys=False))
        seal(target)  # only batching and threads changed: the validation report stands
        return target / MODEL_CONFIG_FILE
    return write_config(target, document)


def _archive_of(target: Path, out_dir: Path) -> Path:
    """The .mar to tune: ``target`` itself, or the build folder archived with archive.sh."""
    if target.suffix == ".mar":
        return target
    if not (target / "model-config.yaml").exists():
        raise FileNotFoundError(f"{target} is neither a .mar nor a build folder with model-config.yaml")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_archive_sh([target], out_dir, quiet=True)
    for suffix in ARCHIVE_PREFERENCE:
        archive = out_dir / f"{target.name}_{suffix}.mar"
        if archive.exists():
            return archive
    raise FileNotFoundError(f"archive.sh made no archive of {target}")


def _tokenizer(archive: Path, work_dir: Path) -> Path | None:
    """The archive's tokenizer.json, extracted, when it takes text."""
    name = read_config(archive)["handler"].get("tokenizer")
    if not name:
        return None
    with zipfile.ZipFile(archive) as mar, tempfile.TemporaryDirectory() as tmp:
        path = Path(mar.extract(name, tmp))
        return Path(shutil.copy(path, work_dir / "tokenizer.json"))


def _say(what: str, m: Measured) -> None:
    print(f"  {what:<8} {m.point.describe():<52} {m.throughput:8.1f} req/s  p50 {m.p50_ms:7.1f}  "
          f"p99 {m.p99_ms:7.1f} ms  errors {m.errors}  ({m.seconds:.0f} s)", flush=True)


def _said(m: Measured) -> Measured:
    _say("grid", m)
    return m
