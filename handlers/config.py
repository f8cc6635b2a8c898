"""A model's handler settings (signature, task, limits), read from its model-config.yaml."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from handlers.cores import available_cores
from handlers.errors import ConfigError
from handlers.signature import DEFAULT_OUTPUT, InputSpec, Signature

if TYPE_CHECKING:
    from handlers.composition import CompositionConfig

DEFAULT_TOP_K = 3
DEFAULT_MAX_INSTANCES = 64
# What a registered model may be called: DELETE /models/<name> must be able to route to it ("../../x" and
# "a b" register in TorchServe 0.12 and can then never be deleted).
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# config.properties' max_response_size: TorchServe's frontend drops the worker (and fails its whole batch) when
# one answer is larger, so an answer that would be is refused with 413 for its own request instead.
DEFAULT_MAX_RESPONSE_BYTES = 6 * 1024 * 1024
FRONTEND_CORES = 1  # left to TorchServe's frontend when sizing worker thread pools
PREDICTIONS = "predictions"  # JSON: class, label, top-k probabilities
PROBABILITIES = "probabilities"  # .npy float32 [n, classes]: what a workflow member hands to the next node
OUTPUTS = (PREDICTIONS, PROBABILITIES)


InputContract = InputSpec  # the name single-input code knew it by


CLASSIFICATION, REGRESSION, EMBEDDING = "classification", "regression", "embedding"
TASKS = (CLASSIFICATION, REGRESSION, EMBEDDING)
DEFAULT_THRESHOLD = 0.5  # multi-label: a class is predicted when its sigmoid reaches this
KNOWN_KEYS = {"decode_threads", "input", "inputs", "outputs", "task", "multi_label", "threshold", "normalize", "tokenizer",
              "labels", "top_k", "max_instances", "threads", "output", "composition", "cuda_graph_batch_sizes",
              "max_response_bytes"}


@dataclass(frozen=True)
class HandlerConfig:
    """The ``handler:`` section of model-config.yaml, validated when loaded.

    Give ``input`` (one-input models answering ``logits``) or a whole ``signature``; the other is
    filled in (``input`` stays None for a model with several inputs).
    """

    input: InputSpec | None = None
    labels: tuple[str, ...] = ()
    top_k: int = DEFAULT_TOP_K
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # keep <= config.properties' max_response_size
    threads: int = 0
    decode_threads: int = 0  # image models: threads decoding a batch's images (0 = 2, or the model's if more)
    workers: int = 1
    output: str = PREDICTIONS
    composition: CompositionConfig | None = None  # set when the model is a pipeline/ensemble of members
    cuda_graph_batch_sizes: tuple[int, ...] = ()  # on a GPU: batch sizes captured as CUDA graphs
    extra: Mapping[str, Any] = field(default_factory=dict)
    task: str = CLASSIFICATION
    multi_label: bool = False
    threshold: float = DEFAULT_THRESHOLD
    normalize: bool = False  # embedding: L2-normalise each vector
    tokenizer: str | None = None  # text in: a tokenizers tokenizer.json inside the archive
    signature: Signature | None = None

    def __post_init__(self) -> None:
        if self.signature is None:
            if self.input is None:
                raise ConfigError("the handler config needs the model's input or its signature")
            object.__setattr__(self, "signature", Signature((self.input,)))
        elif self.input is None:
            object.__setattr__(self, "input", self.signature.single)
        elif self.signature.inputs != (self.input,):
            raise ConfigError(f"input {self.input} disagrees with the signature's inputs {self.signature.inputs}")
        if self.top_k < 1:
            raise ConfigError(f"handler.top_k must be >= 1, got {self.top_k}")
        if self.max_instances < 1:
            raise ConfigError(f"handler.max_instances must be >= 1, got {self.max_instances}")
        if self.max_response_bytes < 1024:
            raise ConfigError(f"handler.max_response_bytes must be >= 1024, got {self.max_response_bytes}")
        if self.threads < 0:
            raise ConfigError(f"handler.threads must be >= 0 (0 = auto), got {self.threads}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"handler.output must be one of {OUTPUTS}, got {self.output!r}")
        if any(size < 1 for size in self.cuda_graph_batch_sizes):
            raise ConfigError(f"handler.cuda_graph_batch_sizes must be positive, got {list(self.cuda_graph_batch_sizes)}")
        if self.task not in TASKS:
            raise ConfigError(f"handler.task must be one of {TASKS}, got {self.task!r}")
        if self.task != CLASSIFICATION and (self.output != PREDICTIONS or self.multi_label or self.labels):
            raise ConfigError(f"labels, multi_label and output: {PROBABILITIES} are for classification, "
                              f"not task {self.task!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"handler.threshold must be in (0, 1), got {self.threshold}")

    @classmethod
    def from_model_yaml(cls, model_yaml: Mapping[str, Any] | None) -> HandlerConfig:
        """Read from ``context.model_yaml_config`` (the parsed model-config.yaml)."""
        if not model_yaml or "handler" not in model_yaml:
            raise ConfigError("model-config.yaml has no 'handler' section with the model's inputs")
        section = dict(model_yaml["handler"])
        if ("input" in section) == ("inputs" in section):
            raise ConfigError("model-config.yaml handler section needs 'input' (one: name, shape, dtype) "
                              "or 'inputs' (a list of them), not both")
        raw_inputs = section["inputs"] if "inputs" in section else [section["input"]]
        if not isinstance(raw_inputs, list) or not all(isinstance(i, Mapping) for i in raw_inputs):
            raise ConfigError(f"handler.inputs must be a list of {{name, shape, dtype}}; got {raw_inputs!r}")
        composition = None
        if "composition" in section:
            from handlers.composition import CompositionConfig

            composition = CompositionConfig.from_dict(section["composition"])
        return cls(
            signature=Signature.from_dicts(raw_inputs, section.get("outputs")),
            labels=tuple(str(label) for label in section.get("labels", ())),
            top_k=int(section.get("top_k", DEFAULT_TOP_K)),
            max_instances=int(section.get("max_instances", DEFAULT_MAX_INSTANCES)),
            max_response_bytes=int(section.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)),
            threads=int(section.get("threads", 0)),
            decode_threads=int(section.get("decode_threads", 0)),
            workers=int(model_yaml.get("maxWorkers", model_yaml.get("minWorkers", 1))),
            output=str(section.get("output", PREDICTIONS)),
            composition=composition,
            cuda_graph_batch_sizes=tuple(int(size) for size in section.get("cuda_graph_batch_sizes", ())),
            extra={k: v for k, v in section.items() if k not in KNOWN_KEYS},
            task=str(section.get("task", CLASSIFICATION)),
            multi_label=bool(section.get("multi_label", False)),
            threshold=float(section.get("threshold", DEFAULT_THRESHOLD)),
            normalize=bool(section.get("normalize", False)),
            tokenizer=None if section.get("tokenizer") is None else str(section["tokenizer"]),
        )

    def to_section(self) -> dict[str, Any]:
        """The ``handler:`` mapping for model-config.yaml; a one-input ``logits`` classifier keeps the old form."""
        signature = self.signature
        section: dict[str, Any] = {}
        if signature.single is not None and signature.outputs == (DEFAULT_OUTPUT,):
            section["input"] = signature.single.to_dict()
        else:
            section["inputs"] = [spec.to_dict() for spec in signature.inputs]
            section["outputs"] = list(signature.outputs)
        if self.task != CLASSIFICATION:
            section["task"] = self.task
        if self.task == CLASSIFICATION:
            section.update(labels=list(self.labels), top_k=self.top_k)
            if self.multi_label:
                section.update(multi_label=True, threshold=self.threshold)
        if self.normalize:
            section["normalize"] = True
        if self.tokenizer is not None:
            section["tokenizer"] = self.tokenizer
        section["max_instances"] = self.max_instances
        if self.max_response_bytes != DEFAULT_MAX_RESPONSE_BYTES:
            section["max_response_bytes"] = self.max_response_bytes
        if self.output != PREDICTIONS:
            section["output"] = self.output
        if self.cuda_graph_batch_sizes:
            section["cuda_graph_batch_sizes"] = list(self.cuda_graph_batch_sizes)
        if self.composition is not None:
            section["composition"] = self.composition.to_dict()
        return section

    def intra_op_threads(self) -> int:
        """The configured thread count, or the default for this many workers."""
        return self.threads or default_intra_op_threads(self.workers)


def default_intra_op_threads(workers: int) -> int:
    """Threads per worker: workers x threads stays within the cores, less one for the frontend.

    Measured on 2 cores (MLP, c=16): 1 thread served 74 % of the no-op handler's rate, 2 threads
    59 %: TorchServe's Java frontend needs a core of its own to move requests.
    """
    spare_cores = max(1, available_cores() - FRONTEND_CORES)
    return max(1, spare_cores // max(1, workers))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
