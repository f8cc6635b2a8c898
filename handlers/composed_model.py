"""A pipeline or ensemble in one worker: preprocess -> members (under a deadline) -> weighted mean.

It behaves like any other backend (``run(batch) -> logits``), so the usual request path
(decode, validate, per-request errors, encode, metrics) serves it unchanged. A pipeline is a
composition with one member.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from handlers.backends import Backend, load_backend
from handlers.composition import (CompositionConfig, as_logits, check_member_outputs, member_probabilities,
                                  preprocess, weighted_mean)
from handlers.errors import MemberFailed, MemberTimedOut

logger = logging.getLogger(__name__)


@dataclass
class Member:
    """A loaded member with its own single thread, so a stuck member never blocks the others' calls."""

    name: str
    backend: Backend
    executor: ThreadPoolExecutor

    def submit(self, batch: np.ndarray) -> Future:
        """Start this member on ``batch``."""
        return self.executor.submit(self.backend.run, batch)


class ComposedModel:
    """Runs every member on the preprocessed batch and returns log of their weighted mean probabilities."""

    def __init__(self, config: CompositionConfig, backends: dict[str, Backend]) -> None:
        self.config = config
        self.members = [Member(name, backends[name], ThreadPoolExecutor(1, thread_name_prefix=f"member-{name}"))
                        for name in config.weights]

    @classmethod
    def load(cls, config: CompositionConfig, model_dir: Path, gpu_id: int | None, threads: int) -> ComposedModel:
        """Load each member file (relative to ``model_dir``) with the backend its suffix names."""
        backends = {}
        for spec in config.members:
            path = model_dir / spec.file
            if not path.is_file():
                raise FileNotFoundError(f"composition member {spec.name!r}: {path} is not in the archive")
            backends[spec.name] = load_backend(path, gpu_id, threads)
        return cls(config, backends)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """All members start together; each must answer before the shared deadline.

        Raises MemberTimedOut (504) or MemberFailed (500) naming the member, never hangs: a
        member still computing after its deadline finishes in the background on its own thread,
        and later calls to it wait behind it (and time out) rather than piling up threads.
        """
        scaled = preprocess(batch, self.config.scale)
        deadline = time.monotonic() + self.config.member_timeout_ms / 1000.0
        futures = {member.name: member.submit(scaled) for member in self.members}
        outputs = {}
        for name, future in futures.items():
            try:
                outputs[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                raise MemberTimedOut(f"ensemble member {name!r} did not answer within "
                                     f"{self.config.member_timeout_ms} ms") from None
            except Exception as error:
                logger.exception("ensemble member %r failed", name)
                raise MemberFailed(f"ensemble member {name!r} failed: {type(error).__name__}: {error}") from error
        try:
            check_member_outputs(outputs, batch.shape[0])
        except ValueError as error:
            raise MemberFailed(str(error)) from None
        probabilities = {name: member_probabilities(output) for name, output in outputs.items()}
        return as_logits(weighted_mean(probabilities, self.config.weights))

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The one input (a composition takes one image) -> its combined logits."""
        (batch,) = inputs.values()
        return [self.run(batch)]

    def describe(self) -> str:
        """Members, their runtimes and the deadline."""
        members = "; ".join(f"{m.name} (w={self.config.weights[m.name]:g}): {m.backend.describe()}" for m in self.members)
        return f"composition of {len(self.members)} [{members}], deadline {self.config.member_timeout_ms} ms"

