"""How many cores this worker may really use: CPU affinity and the container's CPU quota.

``os.cpu_count()`` answers the node's cores. In a Kubernetes pod limited to 2 CPUs on a 64-core node
it says 64, and thread pools sized from it oversubscribe the quota: the kernel throttles the whole
container every scheduling period, and tail latency pays for it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores this process may run on: the smaller of its CPU affinity and its cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup_root)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else max(1, cores)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``); None when unlimited."""
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" else _ratio(quota, period)
    return _ratio(_read(cgroup_root / "cpu" / "cpu.cfs_quota_us") or "-1",
                  _read(cgroup_root / "cpu" / "cpu.cfs_period_us") or "0")


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
