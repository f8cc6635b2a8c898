"""AOTInductor backend: a ``.pt2`` package (torch.export + AOTInductor), on the worker's GPU when compiled for CUDA.

The package holds compiled machine code, not Python model code: loading it needs torch alone. It runs
on the device it was compiled for. A CPU package is pinned to the CPU instruction set of the machine
that compiled it (its metadata names it).
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from handlers.backends.threads import intra_op_threads
from handlers.devices import checked_gpu_id

logger = logging.getLogger(__name__)

DEVICE_KEY = "AOTI_DEVICE_KEY"  # package metadata: "cpu" or "cuda"
CPU_ISA_KEY = "AOTI_CPU_ISA"    # e.g. "AVX512 AVX512_VNNI": the instruction sets its kernels were compiled for
CUDA = "cuda"
# How this CPU says it has each instruction set a package may name (torch.cpu's own probes).
CPU_FEATURE_PROBES = {"AVX2": "_is_avx2_supported", "AVX512": "_is_avx512_supported",
                      "AVX512_VNNI": "_is_vnni_supported", "AMX_TILE": "_is_amx_tile_supported"}


class AotiBackend:
    """Loads a ``.pt2`` package once; runs batches without autograd."""

    def __init__(self, path: Path, gpu_id: int | None, threads: int) -> None:
        gpu_id = checked_gpu_id(gpu_id)
        gpu_usable = gpu_id is not None and torch.cuda.is_available()
        # The loader refuses a device index for a CPU package and needs one for a CUDA package.
        self.compiled_for = compiled_for(path)
        if self.compiled_for == CUDA and not gpu_usable:
            raise RuntimeError(f"{Path(path).name} was compiled for CUDA, but this worker has no usable GPU "
                               f"(gpu_id={gpu_id}); export it on a CPU machine for CPU workers")
        device_index = int(gpu_id) if self.compiled_for == CUDA else -1
        self.package = torch._inductor.aoti_load_package(str(path), device_index=device_index)
        self.cpu_isa = self.package.get_metadata().get(CPU_ISA_KEY, "")
        missing = missing_cpu_features(self.cpu_isa) if self.compiled_for != CUDA else []
        if missing:
            # Running it would end the worker with an illegal instruction, not an error.
            raise RuntimeError(f"{Path(path).name} was compiled for a CPU with {self.cpu_isa}; this CPU lacks "
                               f"{' '.join(missing)}: compile it on a machine like the serving one")
        if self.compiled_for != CUDA and gpu_usable:
            logger.warning("%s was compiled for %s: it runs on the CPU although this worker has GPU %s; "
                           "compile it on a CUDA machine to use the GPU", Path(path).name, self.compiled_for, gpu_id)
        self.device = torch.device(f"cuda:{gpu_id}" if self.compiled_for == CUDA else "cpu")
        # Set around each batch (threads.intra_op_threads): kernels compiled with cpp.dynamic_threads
        # (servekit's exports are) follow torch's count; extern ops always do.
        self.threads = threads
        logger.info("AOTInductor backend: %s", self.describe())

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; output comes back as float32 numpy on the host."""
        return np.asarray(self.run_named({"input": batch})[0], dtype=np.float32)

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The package's positional inputs in signature order (each keeps its dtype); every output, on the host."""
        tensors = [torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True) for x in inputs.values()]
        with torch.inference_mode(), intra_op_threads(None if self.device.type == CUDA else self.threads):
            outputs = self.package(*tensors)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        return [t.float().cpu().numpy() if t.dtype in (torch.float16, torch.bfloat16) else t.cpu().numpy()
                for t in outputs]

    def describe(self) -> str:
        """Runtime, device, what it was compiled for, and threads."""
        threads = "" if self.device.type == CUDA else f", {self.threads} intra-op threads"
        isa = f" {self.cpu_isa}" if self.compiled_for != CUDA and self.cpu_isa else ""
        return f"aotinductor .pt2 (compiled for {self.compiled_for}{isa}) on {self.device}{threads}"


def missing_cpu_features(isa: str) -> list[str]:
    """The instruction sets a CPU package names that this CPU does not have (unknown names are not judged)."""
    missing = []
    for feature in isa.split():
        probe = getattr(torch.cpu, CPU_FEATURE_PROBES.get(feature, ""), None)
        if probe is not None and not probe():
            missing.append(feature)
    return missing


def compiled_for(path: Path) -> str:
    """The device a package was compiled for ("cpu" or "cuda"), from the metadata AOTInductor writes into it."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("wrapper_metadata.json"):
                return json.loads(archive.read(name)).get(DEVICE_KEY, "cpu")
    raise ValueError(f"{Path(path).name} holds no AOTInductor model (no *wrapper_metadata.json): not a .pt2 "
                     "from torch._inductor.aoti_compile_and_package")
