"""Measure one tuning point against a real TorchServe: an archive with the point's threads, registered with
its batching and workers, warmed up, then loaded with wrk at a fixed concurrency."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from handlers.config import HandlerConfig
from handlers.thread_policy import decode_threads
from servekit.measure.bench.run import chosen_threads
from servekit.measure.bench.wrk import run_wrk
from servekit.measure.tune.archive_config import read_config, with_settings, write_config
from servekit.measure.tune.bodies import Bodies
from servekit.measure.tune.search import Measured, Point
from servekit.serve.torchserve import TorchServe

WARMUP_S = 3.0


class ServedMeasure:
    """Measures points of one archive on ``server``; variant archives (one per thread setting) go in its store."""

    def __init__(self, server: TorchServe, archive: Path, bodies: Bodies, concurrency: int, duration_s: float,
                 warmup_s: float = WARMUP_S) -> None:
        self.server, self.archive, self.bodies = server, Path(archive), bodies
        self.concurrency, self.duration_s, self.warmup_s = concurrency, duration_s, warmup_s
        self.document = read_config(self.archive)
        self.name = self.archive.stem
        self.count = 0

    def default(self) -> tuple[Measured, Point]:
        """The archive exactly as built (its own batching, threads measured by the worker), and that point."""
        document = self.document
        threads = int(document["handler"].get("threads", 0))
        store_name = f"{self.name}__tune_default.mar"
        shutil.copyfile(self.archive, self.server.model_store / store_name)
        workers = int(document.get("maxWorkers", document.get("minWorkers", 1)))
        model = self._next_name()
        result = self._run(store_name, model, int(document["batchSize"]), int(document["maxBatchDelay"]), workers)
        chosen = threads or chosen_threads(self.server.log_dir, model) or 1
        images = HandlerConfig.from_model_yaml(document).signature.images
        decoders = decode_threads(int(document["handler"].get("decode_threads", 0)), workers) if images else 0
        point = Point(int(document["batchSize"]), int(document["maxBatchDelay"]), workers, chosen, decoders)
        return Measured(point, *result), point

    def __call__(self, point: Point) -> Measured:
        """Serve and load ``point``."""
        store_name = f"{self.name}__tune_t{point.threads}_d{point.decode_threads}.mar"
        if not (self.server.model_store / store_name).exists():
            settings = with_settings(self.document, point.batch_size, point.max_batch_delay_ms, point.workers,
                                     point.threads, point.decode_threads)
            write_config(self.archive, settings, self.server.model_store / store_name)
        return Measured(point, *self._run(store_name, self._next_name(), point.batch_size, point.max_batch_delay_ms,
                                          point.workers))

    def _next_name(self) -> str:
        self.count += 1
        return f"{self.name}__tune{self.count}"

    def _run(self, store_name: str, model: str, batch_size: int, delay_ms: int,
             workers: int) -> tuple[float, float, float, int, float]:
        client = self.server.client
        started = time.perf_counter()
        client.register(store_name, model_name=model, batch_size=batch_size, max_batch_delay_ms=delay_ms,
                        initial_workers=workers)
        try:
            token = client.tokens.inference if client.tokens else ""
            url = f"{client.inference_url}/predictions/{model}"
            run_wrk(url, self.bodies.paths, self.bodies.content_type, token, self.concurrency, self.warmup_s)
            run = run_wrk(url, self.bodies.paths, self.bodies.content_type, token, self.concurrency, self.duration_s)
        finally:
            client.unregister(model)
        return run.throughput, run.p50_ms, run.p99_ms, run.errors, time.perf_counter() - started
