"""A model's handler settings (signature, task, limits), read from its model-config.yaml."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from handlers.errors import ConfigError
from handlers.signature import DEFAULT_OUTPUT, InputSpec, Signature
from handlers.sub_batches import DEFAULT_MIN_PADDING_EFFICIENCY

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
PREDICTIONS = "predictions"  # JSON: class, label, top-k probabilities
PROBABILITIES = "probabilities"  # .npy float32 [n, classes]: what a workflow member hands to the next node
OUTPUTS = (PREDICTIONS, PROBABILITIES)


InputContract = InputSpec  # the name single-input code knew it by


CLASSIFICATION, REGRESSION, EMBEDDING = "classification", "regression", "embedding"
TOKEN_CLASSIFICATION, QUESTION_ANSWERING = "token_classification", "question_answering"
TASKS = (CLASSIFICATION, REGRESSION, EMBEDDING, TOKEN_CLASSIFICATION, QUESTION_ANSWERING)
LABELLED_TASKS = (CLASSIFICATION, TOKEN_CLASSIFICATION)
DEFAULT_THRESHOLD = 0.5  # multi-label: a class is predicted when its sigmoid reaches this
AGGREGATIONS = ("none", "simple")  # token classification, as transformers' pipeline names them
DEFAULT_AGGREGATION = "simple"
# Question answering, transformers' pipeline defaults: windows of at most 384 tokens overlapping by 128,
# answers of at most 15 tokens.
DEFAULT_WINDOW, DEFAULT_DOC_STRIDE, DEFAULT_MAX_ANSWER_LENGTH = 384, 128, 15
KNOWN_KEYS = {"decode_threads", "input", "inputs", "outputs", "task", "multi_label", "threshold", "normalize", "tokenizer",
              "labels", "top_k", "max_instances", "threads", "output", "composition", "cuda_graph_batch_sizes",
              "padding_invariant", "min_padding_efficiency", "max_batch_tokens",
              "aggregation", "window", "doc_stride", "max_answer_length", "max_response_bytes"}


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
    threads: int = 0  # intra-op threads per worker; 0: measured at start (handlers/thread_policy.py)
    decode_threads: int = 0  # image models: threads decoding a batch's images (0 = the worker's share of the cores, >= 2)
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
    # Length-aware batching (handlers/sub_batches.py), for inputs with a dynamic dimension:
    padding_invariant: bool = True  # export checked that padding never changes an answer; False: equal lengths only
    min_padding_efficiency: float = DEFAULT_MIN_PADDING_EFFICIENCY  # real / computed tokens in each sub-batch
    max_batch_tokens: int = 0  # computed tokens a sub-batch may hold (0: no budget)
    aggregation: str = DEFAULT_AGGREGATION  # token classification: none (every token) or simple (entities)
    window: int = DEFAULT_WINDOW  # question answering: tokens per window of question + context
    doc_stride: int = DEFAULT_DOC_STRIDE  # question answering: tokens consecutive windows share
    max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH  # question answering: longest answer, in tokens

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
        if not 0.0 < self.min_padding_efficiency <= 1.0:
            raise ConfigError(f"handler.min_padding_efficiency must be in (0, 1], got {self.min_padding_efficiency}")
        if self.max_batch_tokens < 0:
            raise ConfigError(f"handler.max_batch_tokens must be >= 0 (0 = no budget), got {self.max_batch_tokens}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"handler.output must be one of {OUTPUTS}, got {self.output!r}")
        if any(size < 1 for size in self.cuda_graph_batch_sizes):
            raise ConfigError(f"handler.cuda_graph_batch_sizes must be positive, got {list(self.cuda_graph_batch_sizes)}")
        if self.task not in TASKS:
            raise ConfigError(f"handler.task must be one of {TASKS}, got {self.task!r}")
        if self.task != CLASSIFICATION and (self.output != PREDICTIONS or self.multi_label):
            raise ConfigError(f"multi_label and output: {PROBABILITIES} are for classification, not task {self.task!r}")
        if self.task not in LABELLED_TASKS and self.labels:
            raise ConfigError(f"labels are for {' and '.join(LABELLED_TASKS)}, not task {self.task!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"handler.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if not 0 <= self.doc_stride < self.window or self.max_answer_length < 1:
            raise ConfigError(f"question answering needs 0 <= doc_stride < window and max_answer_length >= 1; got "
                              f"doc_stride {self.doc_stride}, window {self.window}, max_answer_length {self.max_answer_length}")
        if self.task in (TOKEN_CLASSIFICATION, QUESTION_ANSWERING) and self.tokenizer is None:
            raise ConfigError(f"task {self.task!r} answers about the request's text: it needs handler.tokenizer")
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
            padding_invariant=bool(section.get("padding_invariant", True)),
            min_padding_efficiency=float(section.get("min_padding_efficiency", DEFAULT_MIN_PADDING_EFFICIENCY)),
            max_batch_tokens=int(section.get("max_batch_tokens", 0)),
            aggregation=str(section.get("aggregation", DEFAULT_AGGREGATION)),
            window=int(section.get("window", DEFAULT_WINDOW)),
            doc_stride=int(section.get("doc_stride", DEFAULT_DOC_STRIDE)),
            max_answer_length=int(section.get("max_answer_length", DEFAULT_MAX_ANSWER_LENGTH)),
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
        if self.task == TOKEN_CLASSIFICATION:
            section.update(labels=list(self.labels), aggregation=self.aggregation)
        if self.task == QUESTION_ANSWERING:
            section.update(window=self.window, doc_stride=self.doc_stride, max_answer_length=self.max_answer_length)
        if self.normalize:
            section["normalize"] = True
        if self.tokenizer is not None:
            section["tokenizer"] = self.tokenizer
        section["max_instances"] = self.max_instances
        if signature.dynamic:
            section["padding_invariant"] = self.padding_invariant
        if self.min_padding_efficiency != DEFAULT_MIN_PADDING_EFFICIENCY:
            section["min_padding_efficiency"] = self.min_padding_efficiency
        if self.max_batch_tokens:
            section["max_batch_tokens"] = self.max_batch_tokens
        if self.threads:
            section["threads"] = self.threads
        if self.decode_threads:
            section["decode_threads"] = self.decode_threads
        if self.max_response_bytes != DEFAULT_MAX_RESPONSE_BYTES:
            section["max_response_bytes"] = self.max_response_bytes
        if self.output != PREDICTIONS:
            section["output"] = self.output
        if self.cuda_graph_batch_sizes:
            section["cuda_graph_batch_sizes"] = list(self.cuda_graph_batch_sizes)
        if self.composition is not None:
            section["composition"] = self.composition.to_dict()
        return section


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
