"""Thread pools are sized from the cores a container may use, not the node's."""
from __future__ import annotations

from pathlib import Path

import pytest

from handlers.cores import available_cores, cgroup_cpu_quota


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "200000 100000"}, 2.0),                   # v2: a pod with limits.cpu: 2
    ({"cpu.max": "150000 100000"}, 1.5),                   # limits.cpu: 1500m
    ({"cpu.max": "max 100000"}, None),                     # v2, no limit
    ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, 0.5),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),     # v1, no limit
    ({}, None),                                            # no cgroup files (macOS, old kernels)
])
def test_cgroup_quota_is_read_from_v2_and_v1(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    assert cgroup_cpu_quota(_cgroup(tmp_path, files)) == quota


def test_a_quota_below_the_node_cores_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert available_cores(_cgroup(tmp_path / "two", {"cpu.max": "200000 100000"})) == 2
    assert available_cores(_cgroup(tmp_path / "part", {"cpu.max": "150000 100000"})) == 2  # 1.5 CPUs: round up
    assert available_cores(_cgroup(tmp_path / "tiny", {"cpu.max": "10000 100000"})) == 1
    assert available_cores(_cgroup(tmp_path / "none", {"cpu.max": "max 100000"})) == 64


def test_affinity_below_the_quota_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert available_cores(_cgroup(tmp_path, {"cpu.max": "800000 100000"})) == 2
