"""Read and rewrite the model-config.yaml inside a .mar (a zip): TorchServe reads batchSize, maxBatchDelay,
minWorkers and maxWorkers from it at registration, and our handler its ``handler:`` section."""
from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

MANIFEST = "MAR-INF/MANIFEST.json"


def config_name(archive: Path) -> str:
    """The archive's model-config file name, as its manifest names it."""
    with zipfile.ZipFile(archive) as mar:
        name = json.loads(mar.read(MANIFEST))["model"].get("configFile")
    if not name:
        raise ValueError(f"{archive} has no model-config.yaml (its manifest names no configFile); archive it "
                         "with archive.sh")
    return name


def read_config(archive: Path) -> dict[str, Any]:
    """The parsed model-config.yaml of ``archive``."""
    with zipfile.ZipFile(archive) as mar:
        return yaml.safe_load(mar.read(config_name(archive)))


def write_config(archive: Path, document: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``archive`` (or a copy at ``out``) with its model-config.yaml replaced by ``document``; the rest
    of the archive is copied as it is. The file is replaced only once the new one is complete."""
    out = Path(out or archive)
    name = config_name(archive)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".mar.partial", delete=False) as handle:
        partial = Path(handle.name)
    try:
        with zipfile.ZipFile(archive) as source, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target:
            for item in source.infolist():
                data = yaml.safe_dump(document, sort_keys=False).encode() if item.filename == name else source.read(item)
                target.writestr(item, data)
        shutil.move(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def with_settings(document: dict[str, Any], batch_size: int, max_batch_delay_ms: int, workers: int, threads: int,
                  decode_threads: int = 0) -> dict[str, Any]:
    """``document`` with TorchServe's batching and workers and the handler's threads set."""
    handler = dict(document["handler"], threads=threads)
    if decode_threads:
        handler["decode_threads"] = decode_threads
    return {**document, "batchSize": batch_size, "maxBatchDelay": max_batch_delay_ms, "minWorkers": workers,
            "maxWorkers": workers, "handler": handler}
