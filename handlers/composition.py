"""How a composed model is put together (members, weights, preprocessing) and how their answers combine.

The same ``composition`` mapping drives both ways of serving a composition: one in-process
handler (``handler.composition`` in model-config.yaml) and a TorchServe workflow
(``composition.yaml`` inside the .war, read by ``workflow_nodes.py``). Both combine member
outputs with the functions below, so both answer the same probabilities for the same input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from handlers.errors import ConfigError
from handlers.encode import softmax

DEFAULT_MEMBER_TIMEOUT_MS = 5000
# log(0) would be -inf; the floor keeps "logits" finite without moving any probability visibly.
PROBABILITY_FLOOR = 1e-30


@dataclass(frozen=True)
class MemberSpec:
    """One member model: its name (also its workflow node), its model file and its vote weight."""

    name: str
    file: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.name or not self.file:
            raise ConfigError(f"composition member needs a name and a file, got {self}")
        if not self.weight > 0:
            raise ConfigError(f"composition member {self.name!r}: weight must be > 0, got {self.weight}")


@dataclass(frozen=True)
class CompositionConfig:
    """preprocess (multiply by ``scale``) -> every member -> weighted mean of their probabilities."""

    members: tuple[MemberSpec, ...]
    scale: float = 1.0
    member_timeout_ms: int = DEFAULT_MEMBER_TIMEOUT_MS

    def __post_init__(self) -> None:
        if not self.members:
            raise ConfigError("composition needs at least one member")
        names = [member.name for member in self.members]
        if len(set(names)) != len(names):
            raise ConfigError(f"composition member names must be unique, got {names}")
        if not self.scale > 0:
            raise ConfigError(f"composition scale must be > 0, got {self.scale}")
        if self.member_timeout_ms < 1:
            raise ConfigError(f"composition member_timeout_ms must be >= 1, got {self.member_timeout_ms}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CompositionConfig:
        """Build from the ``composition`` mapping; messages say which key is wrong."""
        members = raw.get("members")
        if not isinstance(members, list):
            raise ConfigError(f"composition.members must be a list of {{name, file, weight}}; got {members!r}")
        try:
            specs = tuple(MemberSpec(str(m["name"]), str(m["file"]), float(m.get("weight", 1.0))) for m in members)
        except (KeyError, TypeError) as missing:
            raise ConfigError(f"composition member needs name and file ({missing}); got {members!r}") from None
        return cls(specs, float(raw.get("scale", 1.0)), int(raw.get("member_timeout_ms", DEFAULT_MEMBER_TIMEOUT_MS)))

    def to_dict(self) -> dict[str, Any]:
        """The mapping written into model-config.yaml or composition.yaml."""
        return {"scale": self.scale, "member_timeout_ms": self.member_timeout_ms,
                "members": [{"name": m.name, "file": m.file, "weight": m.weight} for m in self.members]}

    @property
    def weights(self) -> dict[str, float]:
        """Member name -> weight."""
        return {member.name: member.weight for member in self.members}


def preprocess(batch: np.ndarray, scale: float) -> np.ndarray:
    """Raw image values -> the range the members were trained on (float32)."""
    return np.multiply(batch, np.float32(scale), dtype=np.float32)


def member_probabilities(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, handed on as float32 (what a workflow member sends over the wire)."""
    return softmax(np.asarray(logits, dtype=np.float64)).astype(np.float32)


def weighted_mean(probabilities: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted mean of the members' probabilities, in member order of ``weights``."""
    missing = set(weights) - set(probabilities)
    if missing:
        raise KeyError(f"no probabilities from members {sorted(missing)}")
    total = sum(weights.values())
    mean = sum(probabilities[name].astype(np.float64) * (weight / total) for name, weight in weights.items())
    return np.asarray(mean)


def as_logits(probabilities: np.ndarray) -> np.ndarray:
    """Log-probabilities: logits whose softmax is ``probabilities``, so the usual encoder applies."""
    return np.log(np.maximum(probabilities, PROBABILITY_FLOOR))


def check_member_outputs(outputs: Mapping[str, np.ndarray], rows: int | None = None) -> None:
    """Raise ValueError naming the first member whose output is not ``[rows, classes]`` finite numbers.

    ``rows`` defaults to the first member's; every member must give the first member's class count.
    """
    classes = None
    for name, output in outputs.items():
        if rows is None and output.ndim >= 1:
            rows = output.shape[0]
        if output.ndim != 2 or output.shape[0] != rows or (classes is not None and output.shape[1] != classes):
            expected = f"[{rows}, {classes if classes is not None else 'classes'}]"
            raise ValueError(f"member {name!r} returned shape {list(output.shape)}; expected {expected}")
        if not np.isfinite(output).all():
            raise ValueError(f"member {name!r} returned NaN/Inf")
        classes = output.shape[1]
