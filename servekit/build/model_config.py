"""Write a model's model-config.yaml: TorchServe batching/workers plus our handler's signature and task."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from handlers.config import PREDICTIONS, HandlerConfig
from handlers.signature import InputSpec, Signature

MODEL_CONFIG_FILE = "model-config.yaml"


@dataclass(frozen=True)
class Batching:
    """TorchServe's per-model worker and batching settings."""

    batch_size: int = 16
    max_batch_delay_ms: int = 5
    min_workers: int = 1
    max_workers: int = 1
    response_timeout_s: int = 30

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_batch_delay_ms < 0:
            raise ValueError(f"batch_size must be >= 1 and max_batch_delay >= 0, got {self}")
        if not 1 <= self.min_workers <= self.max_workers:
            raise ValueError(f"need 1 <= min_workers <= max_workers, got {self}")


def model_config(contract: InputSpec | Signature, labels: Sequence[str], batching: Batching,
                 top_k: int = 3, max_instances: int = 64, output: str = PREDICTIONS,
                 composition: dict | None = None, **task: Any) -> dict:
    """The mapping TorchServe reads (camelCase keys) plus our ``handler`` section.

    ``task`` holds HandlerConfig's task settings (task, multi_label, threshold, normalize, tokenizer).
    """
    from handlers.composition import CompositionConfig

    signature = contract if isinstance(contract, Signature) else Signature((contract,))
    handler = HandlerConfig(signature=signature, labels=tuple(labels), top_k=top_k, max_instances=max_instances, output=output,
                            composition=None if composition is None else CompositionConfig.from_dict(composition),
                            **task)
    return handler_model_config(handler, batching)


def handler_model_config(handler: HandlerConfig, batching: Batching) -> dict:
    """model-config.yaml's mapping for an already built HandlerConfig."""
    document = {
        "minWorkers": batching.min_workers,
        "maxWorkers": batching.max_workers,
        "batchSize": batching.batch_size,
        "maxBatchDelay": batching.max_batch_delay_ms,
        "responseTimeout": batching.response_timeout_s,
        "handler": handler.to_section(),
    }
    HandlerConfig.from_model_yaml(document)  # fail at build time, not in the worker
    return document


def write_model_config(path: Path, document: dict) -> Path:
    """Write the YAML (block style, keys in the order given)."""
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
