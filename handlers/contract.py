"""A model's input contract and handler settings, read from its model-config.yaml."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from handlers.cores import available_cores
from handlers.errors import InvalidInput, TooManyInstances

if TYPE_CHECKING:
    from handlers.composition import CompositionConfig

DEFAULT_TOP_K = 3
DEFAULT_MAX_INSTANCES = 64
FRONTEND_CORES = 1  # left to TorchServe's frontend when sizing worker thread pools
ACCEPTED_DTYPES = ("float32", "float64", "float16", "int64", "int32", "uint8")
PREDICTIONS = "predictions"  # JSON: class, label, top-k probabilities
PROBABILITIES = "probabilities"  # .npy float32 [n, classes]: what a workflow member hands to the next node
OUTPUTS = (PREDICTIONS, PROBABILITIES)


class ConfigError(ValueError):
    """model-config.yaml is missing a setting or holds a wrong one."""


@dataclass(frozen=True)
class InputContract:
    """What one instance must look like: name, shape without batch, dtype and value range."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    min_value: float | None = None
    max_value: float | None = None

    def __post_init__(self) -> None:
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise ConfigError(f"input '{self.name}': shape must be positive dims, got {list(self.shape)}")
        if self.dtype not in ACCEPTED_DTYPES:
            raise ConfigError(f"input '{self.name}': dtype {self.dtype!r} not one of {ACCEPTED_DTYPES}")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ConfigError(f"input '{self.name}': min {self.min_value} > max {self.max_value}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InputContract:
        """Build from the ``handler.input`` mapping of model-config.yaml."""
        try:
            return cls(
                name=str(raw["name"]),
                shape=tuple(int(d) for d in raw["shape"]),
                dtype=str(raw.get("dtype", "float32")),
                min_value=_optional_float(raw.get("min")),
                max_value=_optional_float(raw.get("max")),
            )
        except KeyError as missing:
            raise ConfigError(f"handler.input needs {missing}; got keys {sorted(raw)}") from None

    def to_dict(self) -> dict[str, Any]:
        """The mapping written into model-config.yaml."""
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.min_value is not None:
            out["min"] = self.min_value
        if self.max_value is not None:
            out["max"] = self.max_value
        return out

    def as_batch(self, array: np.ndarray, max_instances: int) -> np.ndarray:
        """Check one request's array and return it as ``[n, *shape]`` in the contract dtype.

        Accepts one instance (``shape``) or several (``[n, *shape]``).
        """
        if array.dtype.kind not in "biuf" or array.dtype.kind == "b":
            raise InvalidInput(
                f"input '{self.name}' has dtype {array.dtype}; expected numbers ({self.dtype})"
            )
        if not np.can_cast(array.dtype, self.dtype, casting="same_kind"):
            raise InvalidInput(f"input '{self.name}' has dtype {array.dtype}; expected {self.dtype}")
        if tuple(array.shape) == self.shape:
            array = array[np.newaxis]
        elif tuple(array.shape[1:]) != self.shape or array.ndim != len(self.shape) + 1:
            raise InvalidInput(
                f"input '{self.name}' has shape {list(array.shape)}; "
                f"expected {list(self.shape)} or [N, {', '.join(map(str, self.shape))}]"
            )
        count = array.shape[0]
        if count == 0:
            raise InvalidInput(f"input '{self.name}' holds no instances")
        if count > max_instances:
            raise TooManyInstances(
                f"input '{self.name}' holds {count} instances; at most {max_instances} per request"
            )
        return np.ascontiguousarray(array, dtype=self.dtype)

    def values_ok(self, batch: np.ndarray) -> bool:
        """One cheap pass over a whole batch: True when every value is finite and in range.

        min/max propagate NaN, so NaN and Inf both fail here; ``check_values`` then names them.
        """
        if batch.size == 0:
            return True
        low, high = batch.min(), batch.max()
        if batch.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
            return False  # NaN or Inf somewhere
        return bool((self.min_value is None or low >= self.min_value) and (self.max_value is None or high <= self.max_value))

    def check_values(self, array: np.ndarray) -> None:
        """Raise InvalidInput naming NaN/Inf or the out-of-range value."""
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise InvalidInput(f"input '{self.name}' holds {bad} NaN/Inf values; expected finite numbers")
        if self.min_value is not None and array.min() < self.min_value:
            raise InvalidInput(
                f"input '{self.name}' has a value {array.min():g} below the allowed minimum {self.min_value:g}"
            )
        if self.max_value is not None and array.max() > self.max_value:
            raise InvalidInput(
                f"input '{self.name}' has a value {array.max():g} above the allowed maximum {self.max_value:g}"
            )


@dataclass(frozen=True)
class HandlerConfig:
    """The ``handler:`` section of model-config.yaml, validated when loaded."""

    input: InputContract
    labels: tuple[str, ...] = ()
    top_k: int = DEFAULT_TOP_K
    max_instances: int = DEFAULT_MAX_INSTANCES
    threads: int = 0
    workers: int = 1
    output: str = PREDICTIONS
    composition: CompositionConfig | None = None  # set when the model is a pipeline/ensemble of members
    cuda_graph_batch_sizes: tuple[int, ...] = ()  # on a GPU: batch sizes captured as CUDA graphs
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"handler.top_k must be >= 1, got {self.top_k}")
        if self.max_instances < 1:
            raise ConfigError(f"handler.max_instances must be >= 1, got {self.max_instances}")
        if self.threads < 0:
            raise ConfigError(f"handler.threads must be >= 0 (0 = auto), got {self.threads}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"handler.output must be one of {OUTPUTS}, got {self.output!r}")
        if any(size < 1 for size in self.cuda_graph_batch_sizes):
            raise ConfigError(f"handler.cuda_graph_batch_sizes must be positive, got {list(self.cuda_graph_batch_sizes)}")

    @classmethod
    def from_model_yaml(cls, model_yaml: Mapping[str, Any] | None) -> HandlerConfig:
        """Read from ``context.model_yaml_config`` (the parsed model-config.yaml)."""
        if not model_yaml or "handler" not in model_yaml:
            raise ConfigError("model-config.yaml has no 'handler' section with the input contract")
        section = dict(model_yaml["handler"])
        if "input" not in section:
            raise ConfigError("model-config.yaml handler section needs 'input' (name, shape, dtype)")
        known = {"input", "labels", "top_k", "max_instances", "threads", "output", "composition",
                 "cuda_graph_batch_sizes"}
        composition = None
        if "composition" in section:
            from handlers.composition import CompositionConfig  # imports ConfigError from here

            composition = CompositionConfig.from_dict(section["composition"])
        return cls(
            input=InputContract.from_dict(section["input"]),
            labels=tuple(str(label) for label in section.get("labels", ())),
            top_k=int(section.get("top_k", DEFAULT_TOP_K)),
            max_instances=int(section.get("max_instances", DEFAULT_MAX_INSTANCES)),
            threads=int(section.get("threads", 0)),
            workers=int(model_yaml.get("maxWorkers", model_yaml.get("minWorkers", 1))),
            output=str(section.get("output", PREDICTIONS)),
            composition=composition,
            cuda_graph_batch_sizes=tuple(int(size) for size in section.get("cuda_graph_batch_sizes", ())),
            extra={k: v for k, v in section.items() if k not in known},
        )

    def intra_op_threads(self) -> int:
        """The configured thread count, or the default for this many workers."""
        return self.threads or default_intra_op_threads(self.workers)


def holds_bool(values: list) -> bool:
    """A rectangular nested list (as JSON gives it) with a true/false anywhere: numpy would read it as
    1/0 among numbers, but a boolean is not a number the model was trained on. One pass per row."""
    if not values:
        return False
    if isinstance(values[0], list):
        return any(holds_bool(row) for row in values)
    return bool in set(map(type, values))


def default_intra_op_threads(workers: int) -> int:
    """Threads per worker: workers x threads stays within the cores, less one for the frontend.

    Measured on 2 cores (MLP, c=16): 1 thread served 74 % of the no-op handler's rate, 2 threads
    59 %: TorchServe's Java frontend needs a core of its own to move requests.
    """
    spare_cores = max(1, available_cores() - FRONTEND_CORES)
    return max(1, spare_cores // max(1, workers))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
