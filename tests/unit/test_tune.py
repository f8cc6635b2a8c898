"""`servekit tune`'s parts that need no server: the search finds a synthetic peak sparsely and keeps a latency
bound; the winner is written into a .mar's model-config.yaml and nothing else in it changes."""
from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest
import yaml

from servekit.measure.tune.archive_config import read_config, with_settings, write_config
from servekit.measure.tune.bodies import generated_bodies, token_lengths, user_bodies
from servekit.measure.tune.search import Measured, Point, SearchSpace, pattern_search, winner
from servekit.measure.tune.run import search_space
from handlers.errors import ConfigError

PEAK = {(1, 1): 0.6, (1, 2): 1.0, (2, 1): 0.8}  # workers x threads on 2 cores


def synthetic(point: Point) -> Measured:
    """A smooth landscape with its peak at batch 16, delay 10 ms, 1 worker x 2 threads; p99 grows with the batch."""
    rate = 100 * math.exp(-abs(math.log2(point.batch_size) - 4) * 0.3)
    rate *= math.exp(-abs(math.log2(point.max_batch_delay_ms / 10)) * 0.2) * PEAK[(point.workers, point.threads)]
    return Measured(point, rate, 10.0, 1000.0 / rate * point.batch_size)


def test_the_search_finds_the_peak_in_a_fraction_of_the_grid() -> None:
    space = SearchSpace(cores=2)
    tried = pattern_search(space, Point(16, 5, 1, 1), synthetic, max_points=60)
    grid_best = max((synthetic(p) for p in space.grid()), key=lambda m: m.throughput)
    assert winner(tried).throughput >= 0.95 * grid_best.throughput
    assert len(tried) <= len(space.grid()) / 3
    assert len({m.point for m in tried}) == len(tried)  # never the same point twice
    assert all(space.valid(m.point) for m in tried)


def test_a_latency_bound_is_kept_and_the_budget_respected() -> None:
    space = SearchSpace(cores=2)
    tried = pattern_search(space, Point(16, 5, 1, 1), synthetic, p99_bound_ms=100, max_points=60)
    assert winner(tried, 100).p99_ms <= 100
    assert len(pattern_search(space, Point(16, 5, 1, 1), synthetic, max_points=4)) == 4
    known = synthetic(Point(16, 5, 1, 1))
    calls: list[Point] = []
    pattern_search(space, known.point, lambda p: calls.append(p) or synthetic(p), max_points=3, known=[known])
    assert known.point not in calls and len(calls) == 2


def test_workers_times_threads_never_exceed_the_cores() -> None:
    space = search_space(cores=4, concurrency=8, batch_size=16, delay_ms=7, images=True)
    assert max(space.batch_sizes) == 16 and 7 in space.delays_ms and space.decode_threads == (1, 2, 3, 4)
    assert all(p.workers * p.threads <= 4 for p in space.grid())


def make_mar(path: Path, document: dict) -> Path:
    with zipfile.ZipFile(path, "w") as mar:
        mar.writestr("model.onnx", b"weights")
        mar.writestr("model-config.yaml", yaml.safe_dump(document))
        mar.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"configFile": "model-config.yaml"}}))
    return path


def test_the_winner_is_written_into_the_archive(tmp_path: Path) -> None:
    document = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 16, "maxBatchDelay": 5,
                "handler": {"input": {"name": "x", "shape": [4]}, "top_k": 3}}
    archive = make_mar(tmp_path / "m.mar", document)
    write_config(archive, with_settings(document, 8, 20, 2, 1, decode_threads=2))
    tuned = read_config(archive)
    assert (tuned["batchSize"], tuned["maxBatchDelay"], tuned["minWorkers"], tuned["maxWorkers"]) == (8, 20, 2, 2)
    assert tuned["handler"] == {**document["handler"], "threads": 1, "decode_threads": 2}
    with zipfile.ZipFile(archive) as mar:
        assert mar.read("model.onnx") == b"weights" and len(mar.infolist()) == 3
    assert not list(tmp_path.glob("*.partial"))


def test_bodies_from_a_folder_or_the_signature(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.json").write_text("{}")
    assert user_bodies(tmp_path).content_type == "application/json"
    (tmp_path / "c.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="one kind"):
        user_bodies(tmp_path)
    document = {"handler": {"inputs": [{"name": "ids", "shape": ["1..64"], "dtype": "int64", "min": 0, "max": 9},
                                       {"name": "mask", "shape": ["1..64"], "dtype": "int64", "min": 0, "max": 1}],
                            "outputs": ["logits"]}}
    bodies = generated_bodies(document, None, tmp_path / "generated", count=8)
    lengths = [{len(v) for v in json.loads(p.read_text())["inputs"].values()} for p in bodies.paths]
    assert all(len(pair) == 1 for pair in lengths)  # ids and mask share each instance's length
    lengths = token_lengths(1000, 128)
    assert 20 <= float(sorted(lengths)[500]) <= 28 and lengths.max() <= 128 and lengths.min() >= 2


def test_an_image_archives_own_settings_start_inside_the_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default decode threads (none set in model-config.yaml) are a point the search can move from."""
    from handlers.thread_policy import decode_threads

    monkeypatch.setattr("handlers.thread_policy.available_cores", lambda: 2)
    space = search_space(cores=2, concurrency=16, batch_size=16, delay_ms=5, images=True)
    start = Point(16, 5, 1, 2, decode_threads(0, workers=1))
    assert space.valid(start)
    assert len(pattern_search(space, start, synthetic_images, max_points=5)) == 5


def synthetic_images(point: Point) -> Measured:
    return synthetic(Point(point.batch_size, point.max_batch_delay_ms, point.workers, point.threads))
