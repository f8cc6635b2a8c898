"""A model's signature: its named inputs (dtype, per-instance shape with dynamic dimensions, value
range, padding) and named outputs. One source of truth for export, validation, request checks,
padding a batch and naming the outputs of an answer.

A per-instance dimension is either a fixed size or a ``Range`` (``"1..128"`` in model-config.yaml
and on the command line). Dynamic dimensions at the same position of different inputs share one
length by default (``input_ids`` and ``attention_mask`` of one request must agree); instances of
different lengths in one batch are padded to the batch's longest, never to the maximum.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from handlers.errors import ConfigError, InvalidInput, TooManyInstances

if TYPE_CHECKING:
    from handlers.audio import AudioPreprocess
    from handlers.image import ImagePreprocess

DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")
DEFAULT_OUTPUT = "logits"
RANGE_SEPARATOR = ".."


@dataclass(frozen=True)
class Range:
    """A dynamic dimension: any length from ``low`` to ``high`` (both inclusive)."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 1 <= self.low <= self.high:
            raise ConfigError(f"dynamic dimension {self} needs 1 <= low <= high")

    def __str__(self) -> str:
        return f"{self.low}{RANGE_SEPARATOR}{self.high}"

    def lengths(self) -> tuple[int, int, int]:
        """Shortest, a middle one and the longest: the lengths validation runs at."""
        return self.low, (self.low + self.high) // 2, self.high


Dim = int | Range


def parse_dim(raw: Any) -> Dim:
    """``16`` / ``"16"`` -> 16; ``"1..128"`` -> Range(1, 128)."""
    if isinstance(raw, Range):
        return raw
    text = str(raw).strip()
    try:
        sizes = [int(part) for part in text.split(RANGE_SEPARATOR, 1)]
    except ValueError:
        raise ConfigError(f"dimension {raw!r} must be a size (16) or a range (1..128)") from None
    return Range(*sizes) if len(sizes) == 2 else sizes[0]


def axis_name(position: int) -> str:
    """The name of a dynamic per-instance dimension (ONNX dynamic axis; shared across inputs)."""
    return f"dim{position + 1}"  # dim0 is the batch


@dataclass(frozen=True)
class InputSpec:
    """One named input: per-instance shape (ints and Ranges), dtype, value range and pad value."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    min_value: float | None = None
    max_value: float | None = None
    pad_value: float = 0
    image: ImagePreprocess | None = None  # an image input: requests send encoded images, decoded by this
    audio: AudioPreprocess | None = None  # an audio input (samples [1..N]): requests may send WAV files

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("every input needs a name")
        shape = tuple(parse_dim(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        if not shape or any(isinstance(d, int) and d <= 0 for d in shape):
            raise ConfigError(f"input '{self.name}': shape must be positive dims, got {self.shape_text()}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"input '{self.name}': dtype {self.dtype!r} not one of {DTYPES}")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ConfigError(f"input '{self.name}': min {self.min_value} > max {self.max_value}")
        if self.image is not None:
            if self.dtype != "float32" or self.dynamic:
                raise ConfigError(f"image input '{self.name}' must be float32 with a fixed shape")
            self.image.check_shape(shape)
        if self.audio is not None and (self.dtype != "float32" or len(shape) != 1 or not isinstance(shape[0], Range)):
            raise ConfigError(f"audio input '{self.name}' must be float32 samples with one dynamic dimension, e.g. [400..160000]")
        if self.audio is not None and (self.audio.min_samples, self.audio.max_samples) != (shape[0].low, shape[0].high):
            raise ConfigError(f"audio input '{self.name}': clips of {self.audio.min_samples}..{self.audio.max_samples} "
                              f"samples disagree with its shape {self.shape_text()}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InputSpec:
        """Build from one input mapping of model-config.yaml."""
        try:
            image = None
            if raw.get("image") is not None:
                from handlers.image import ImagePreprocess

                image = ImagePreprocess.from_dict(raw["image"], [int(d) for d in raw["shape"]])
            audio = None
            if raw.get("audio") is not None:
                from handlers.audio import AudioPreprocess

                audio = AudioPreprocess.from_dict(raw["audio"], raw["shape"])
            return cls(
                name=str(raw["name"]),
                shape=tuple(parse_dim(d) for d in raw["shape"]),
                dtype=str(raw.get("dtype", "float32")),
                min_value=_optional_float(raw.get("min")),
                max_value=_optional_float(raw.get("max")),
                pad_value=float(raw.get("pad", 0)),
                image=image,
                audio=audio,
            )
        except KeyError as missing:
            raise ConfigError(f"an input needs {missing}; got keys {sorted(raw)}") from None

    def to_dict(self) -> dict[str, Any]:
        """The mapping written into model-config.yaml (fixed dims stay ints, ranges become "1..128")."""
        out: dict[str, Any] = {"name": self.name, "shape": [d if isinstance(d, int) else str(d) for d in self.shape],
                               "dtype": self.dtype}
        if self.min_value is not None:
            out["min"] = self.min_value
        if self.max_value is not None:
            out["max"] = self.max_value
        if self.pad_value:
            out["pad"] = self.pad_value
        if self.image is not None:
            out["image"] = self.image.to_dict()
        if self.audio is not None:
            out["audio"] = self.audio.to_dict()
        return out

    @property
    def dynamic(self) -> bool:
        """Whether any per-instance dimension is dynamic."""
        return any(isinstance(d, Range) for d in self.shape)

    def shape_text(self) -> str:
        """``[3, 32, 32]`` or ``[1..128]``."""
        return "[" + ", ".join(str(d) for d in self.shape) + "]"

    def fixed_shape(self, length: int | None = None) -> tuple[int, ...]:
        """The shape with every dynamic dimension set to ``length`` (default: its longest)."""
        return tuple(d if isinstance(d, int) else (d.high if length is None else length) for d in self.shape)

    def _fits(self, dims: Sequence[int]) -> bool:
        return len(dims) == len(self.shape) and all(
            size == d if isinstance(d, int) else d.low <= size <= d.high for size, d in zip(dims, self.shape))

    def as_batch(self, array: np.ndarray, max_instances: int) -> np.ndarray:
        """Check one request's array and return it as ``[n, *shape]`` in the declared dtype.

        Accepts one instance (``shape``) or several (``[n, *shape]``); the number of dimensions decides.
        An image input holds decoded pixels ``[n, height, width, channels]`` (uint8) until the batch is stacked.
        """
        if self.image is not None:
            return self._as_pixels(array, max_instances)
        self._check_dtype(array)
        if array.ndim == len(self.shape) and self._fits(array.shape):
            array = array[np.newaxis]
        elif array.ndim != len(self.shape) + 1 or not self._fits(array.shape[1:]):
            inner = ", ".join(str(d) for d in self.shape)
            raise InvalidInput(
                f"input '{self.name}' has shape {list(array.shape)}; expected {self.shape_text()} or [N, {inner}]"
            )
        count = array.shape[0]
        if count == 0:
            raise InvalidInput(f"input '{self.name}' holds no instances")
        if count > max_instances:
            raise TooManyInstances(
                f"input '{self.name}' holds {count} instances; at most {max_instances} per request"
            )
        return np.ascontiguousarray(array, dtype=self.dtype)

    def _as_pixels(self, array: np.ndarray, max_instances: int) -> np.ndarray:
        if array.dtype != np.uint8 or array.shape[1:] != self.image.pixels_shape:
            raise InvalidInput(f"input '{self.name}' takes encoded images (JPEG, PNG, WebP), not a tensor")
        if array.shape[0] > max_instances:
            raise TooManyInstances(f"input '{self.name}' holds {array.shape[0]} images; at most {max_instances} per request")
        return array

    def _check_dtype(self, array: np.ndarray) -> None:
        wanted = np.dtype(self.dtype)
        if wanted.kind == "b":
            if array.dtype.kind != "b":
                raise InvalidInput(f"input '{self.name}' has dtype {array.dtype}; expected bool (true/false)")
            return
        if array.dtype.kind not in "iuf":
            raise InvalidInput(
                f"input '{self.name}' has dtype {array.dtype}; expected numbers ({self.dtype})"
            )
        if not np.can_cast(array.dtype, wanted, casting="same_kind") and not (
                wanted.kind in "iu" and array.dtype.kind in "iu"):
            raise InvalidInput(f"input '{self.name}' has dtype {array.dtype}; expected {self.dtype}")
        if wanted.kind in "iu" and array.size and not np.can_cast(array.dtype, wanted, casting="safe"):
            info = np.iinfo(wanted)  # a narrowing cast would wrap silently (300 -> 44 as uint8)
            low, high = array.min(), array.max()
            if low < info.min or high > info.max:
                raise InvalidInput(f"input '{self.name}' holds {low if low < info.min else high}, "
                                   f"outside {self.dtype} [{info.min}, {info.max}]")

    def values_ok(self, batch: np.ndarray) -> bool:
        """One cheap pass over a whole batch: True when every value is finite and in range.

        min/max propagate NaN, so NaN and Inf both fail here; ``check_values`` then names them.
        """
        if batch.size == 0 or batch.dtype.kind == "b" or self.image is not None:
            return True  # an image's pixels are 0..255 by construction
        low, high = batch.min(), batch.max()
        if batch.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
            return False  # NaN or Inf somewhere
        return bool((self.min_value is None or low >= self.min_value) and (self.max_value is None or high <= self.max_value))

    def check_values(self, array: np.ndarray) -> None:
        """Raise InvalidInput naming NaN/Inf or the out-of-range value."""
        if array.size == 0 or array.dtype.kind == "b" or self.image is not None:
            return
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
class Signature:
    """Named inputs in the order the model takes them; named outputs in the order it returns them."""

    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...] = (DEFAULT_OUTPUT,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not self.inputs or not self.outputs:
            raise ConfigError("a signature needs at least one input and one output")
        for kind, names in (("input", [i.name for i in self.inputs]), ("output", list(self.outputs))):
            if len(set(names)) != len(names):
                raise ConfigError(f"{kind} names must be unique, got {names}")
        if self.images and len(self.inputs) > 1:
            raise ConfigError(f"an image input must be the model's only input; got {list(self.names)}")

    @classmethod
    def from_dicts(cls, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Any] | None = None) -> Signature:
        """From model-config.yaml's ``inputs`` (mappings) and ``outputs`` (names or ``{name: ...}``)."""
        names = [str(o["name"] if isinstance(o, Mapping) else o) for o in (outputs or [DEFAULT_OUTPUT])]
        return cls(tuple(InputSpec.from_dict(raw) for raw in inputs), tuple(names))

    @property
    def names(self) -> tuple[str, ...]:
        """Input names, in the model's order."""
        return tuple(spec.name for spec in self.inputs)

    @property
    def single(self) -> InputSpec | None:
        """The only input of a one-input model, else None."""
        return self.inputs[0] if len(self.inputs) == 1 else None

    @property
    def dynamic(self) -> bool:
        """Whether any input has a dynamic per-instance dimension."""
        return any(spec.dynamic for spec in self.inputs)

    @property
    def images(self) -> dict[str, ImagePreprocess]:
        """The image inputs by name, with their preprocessing (empty for a model that takes tensors)."""
        return {spec.name: spec.image for spec in self.inputs if spec.image is not None}

    @property
    def audio(self) -> dict[str, AudioPreprocess]:
        """The audio inputs by name, with their preprocessing (empty for a model that takes no audio)."""
        return {spec.name: spec.audio for spec in self.inputs if spec.audio is not None}

    def lengths(self) -> tuple[int, ...]:
        """The lengths every dynamic dimension is validated at: shortest, middle, longest (of the tightest range)."""
        ranges = [d for spec in self.inputs for d in spec.shape if isinstance(d, Range)]
        if not ranges:
            return ()
        low, high = max(r.low for r in ranges), min(r.high for r in ranges)
        return tuple(sorted({low, (low + high) // 2, high}))

    def check_request(self, arrays: Mapping[str, np.ndarray], max_instances: int) -> dict[str, np.ndarray]:
        """One request's named arrays, each as ``[n, *shape]``: names, shapes, dtypes, counts and shared lengths."""
        missing = [name for name in self.names if name not in arrays]
        unknown = sorted(set(arrays) - set(self.names))
        if missing or unknown:
            raise InvalidInput(f"request has inputs {sorted(arrays)}; this model takes {list(self.names)}")
        batches = {spec.name: spec.as_batch(arrays[spec.name], max_instances) for spec in self.inputs}
        counts = {name: batch.shape[0] for name, batch in batches.items()}
        if len(set(counts.values())) > 1:
            raise InvalidInput(f"inputs hold different numbers of instances: {counts}")
        self._check_shared_lengths(batches)
        return batches

    def _check_shared_lengths(self, batches: Mapping[str, np.ndarray]) -> None:
        seen: dict[int, tuple[str, int]] = {}
        for spec in self.inputs:
            for position, dim in enumerate(spec.shape):
                if not isinstance(dim, Range):
                    continue
                length = batches[spec.name].shape[position + 1]
                first = seen.setdefault(position, (spec.name, length))
                if first[1] != length:
                    raise InvalidInput(f"input '{spec.name}' has length {length} on {axis_name(position)}; "
                                       f"input '{first[0]}' has {first[1]} (they must agree)")

    def values_ok(self, batch: Mapping[str, np.ndarray]) -> bool:
        """Every input of a whole batch finite and in range (one pass each)."""
        return all(spec.values_ok(batch[spec.name]) for spec in self.inputs)

    def check_values(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Raise InvalidInput naming the first input with NaN/Inf or an out-of-range value."""
        for spec in self.inputs:
            spec.check_values(arrays[spec.name])

    def stack(self, requests: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One batch from per-request arrays; dynamic dimensions padded to the batch's longest."""
        if len(requests) == 1 and not self.images:
            return dict(requests[0])  # no copy, no padding
        return {spec.name: spec.image.to_model([r[spec.name] for r in requests]) if spec.image is not None
                else _padded_concat([r[spec.name] for r in requests], spec.pad_value, spec.dtype)
                for spec in self.inputs}


def _padded_concat(arrays: Sequence[np.ndarray], pad_value: float, dtype: str) -> np.ndarray:
    """Concatenate along the batch axis, padding every other axis at its end to the longest."""
    longest = tuple(max(a.shape[axis] for a in arrays) for axis in range(1, arrays[0].ndim))
    if all(a.shape[1:] == longest for a in arrays):
        return np.concatenate(arrays)
    out = np.full((sum(a.shape[0] for a in arrays), *longest), pad_value, dtype=dtype)
    start = 0
    for array in arrays:
        stop = start + array.shape[0]
        out[(slice(start, stop), *(slice(0, size) for size in array.shape[1:]))] = array
        start = stop
    return out


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
