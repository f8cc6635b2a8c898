"""Installed size of what a deployment needs, measured from the installed distributions."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

TORCHSERVE_RUNTIME = ("torchserve", "torch", "onnxruntime", "numpy", "pyyaml")
ORT_RUNTIME = ("onnxruntime", "numpy")


@dataclass(frozen=True)
class DeploymentSize:
    """Bytes on disk of a set of Python distributions (with everything they require) plus extras."""

    name: str
    distributions: dict[str, int]
    extra: dict[str, int]

    @property
    def total(self) -> int:
        """All bytes."""
        return sum(self.distributions.values()) + sum(self.extra.values())


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: tuple[str, ...]) -> set[str]:
    """Distribution names of ``roots`` and everything they require (markers evaluated, extras ignored)."""
    seen: set[str] = set()
    stack = [_normalize(r) for r in roots]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for raw in dist.requires or []:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(_normalize(requirement.name))
    return seen


def distribution_bytes(name: str) -> int:
    """Sum of the sizes of a distribution's installed files."""
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


def java_runtime_bytes() -> int:
    """Size of the JDK/JRE that ``java`` on PATH belongs to (TorchServe's frontend needs it)."""
    java = shutil.which("java")
    if java is None:
        return 0
    home = Path(java).resolve().parent.parent
    out = subprocess.run(["du", "-sb", str(home)], capture_output=True, text=True, check=False).stdout
    return int(out.split()[0]) if out else 0


def measure(name: str, roots: tuple[str, ...], with_java: bool) -> DeploymentSize:
    """Size one deployment."""
    sizes = {dist: distribution_bytes(dist) for dist in sorted(closure(roots))}
    extra = {"java runtime": java_runtime_bytes()} if with_java else {}
    return DeploymentSize(name, sizes, extra)
