"""Which CUDA device a worker runs on: TorchServe's ``gpu_id``, checked, never silently ignored."""
from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """The worker was given a GPU that this process cannot see."""


def visible_cuda_devices() -> int:
    """CUDA devices torch can see in this process (0 with a CPU build of torch)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def checked_gpu_id(gpu_id: int | str | None) -> int | None:
    """``gpu_id`` as an int, or None for CPU; raise DeviceError when it names a device that is not there.

    TorchServe assigns ``gpu_id`` round-robin over the GPUs *it* counted (nvidia-smi, or
    ``number_of_gpu``); with ``CUDA_VISIBLE_DEVICES`` narrowing what this process sees, or a config
    that claims more GPUs than exist, the id can point past the last device. Falling back to CPU then
    would hide a misconfiguration behind a 50x slower model, so it is an error here.
    """
    if gpu_id is None:
        return None
    index = int(gpu_id)
    count = visible_cuda_devices()
    if index < 0 or (count and index >= count):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise DeviceError(f"this worker was given GPU {index}, but this process sees {count} CUDA device(s) "
                          f"(CUDA_VISIBLE_DEVICES={visible}); check number_of_gpu in config.properties")
    return index
