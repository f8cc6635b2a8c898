"""deploy/: the image's config keeps our safety settings, its pins agree with pyproject.toml, and the
Dockerfile lints clean and copies only what its build context lets in."""
from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from support.manifests import read_properties

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VARIANTS = ("cpu", "cuda")
# Where the container's TorchServe differs from ../config.properties, and why (deploy/config.properties
# says the same beside each line): pods are reached through their address, models are baked in, and
# per-process tokens cannot work behind a load-balanced Service.
CONTAINER_DIFFERENCES = {"inference_address", "metrics_address", "load_models", "enable_model_api",
                         "disable_token_authorization", "vmargs"}


def _pins(path: Path) -> dict[str, Requirement]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {(r := Requirement(line)).name.lower(): r for line in lines if line}


def test_the_container_config_keeps_every_safety_setting_of_the_local_one() -> None:
    local, container = read_properties(REPO / "config.properties"), read_properties(DEPLOY / "config.properties")
    changed = {key for key in local.keys() | container.keys() if local.get(key) != container.get(key)}
    assert changed == CONTAINER_DIFFERENCES
    assert container["management_address"].startswith("http://127.0.0.1:")
    assert container["grpc_inference_address"] == container["grpc_management_address"] == "127.0.0.1"
    assert container["enable_model_api"] == "false" and container["install_py_dep_per_model"] == "false"


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_pins_are_exact_and_agree_with_pyproject(variant: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["cpu"]
                + project["optional-dependencies"]["gpu"] + project["optional-dependencies"]["text"]]
    declared_by_name = {r.name.lower(): r for r in declared}
    pins = _pins(DEPLOY / f"requirements-{variant}.txt")
    # tokenizers: an archive that ships a tokenizer.json takes text, and its worker tokenises in the image.
    assert {"torch", "torchserve", "pyyaml", "numpy", "tokenizers"} <= pins.keys()
    assert ("onnxruntime" if variant == "cpu" else "onnxruntime-gpu") in pins
    for name, pin in pins.items():
        (spec,) = pin.specifier
        assert spec.operator == "==", f"{name} must be pinned exactly in the image, got {pin}"
        if name in declared_by_name:
            assert declared_by_name[name].specifier.contains(spec.version), f"{pin} is outside pyproject's {declared_by_name[name]}"


def test_the_dockerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _included(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics: the last pattern that matches decides; '!' re-includes."""
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(path, pattern.lstrip("!")):
            included = negated
    return included


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    patterns = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [m.group(1) for m in re.finditer(r"(?m)^COPY (?!--from)(\S+) ", dockerfile)]
    assert sources, "no COPY lines found"
    for source in (s.replace("${VARIANT}", v) for s in sources for v in VARIANTS):
        if source.endswith("/"):  # a directory: what of it goes in
            assert _included(f"{source}digits_mlp_onnx.mar", patterns) and not _included(f"{source}notes.txt", patterns)
            continue
        assert (REPO / source).is_file(), f"COPY {source}: no such file"
        assert _included(source, patterns), f"COPY {source} is excluded by Dockerfile.dockerignore"
    for secret in ("key_file.json", ".venv/bin/python", "build/digits_mlp/model.pt", "logs/ts_log.log"):
        assert not _included(secret, patterns)


def test_the_default_image_carries_archives_that_make_demo_builds() -> None:
    from servekit.examples.demo import ARCHIVE_FORMATS
    from servekit.examples.models import DEMO_MODELS

    default = re.search(r'(?m)^ARG MODELS="([^"]+)"', (DEPLOY / "Dockerfile").read_text()).group(1).split()
    assert default and set(default) <= {f"{name}_{suffix}.mar" for name in DEMO_MODELS for suffix in ARCHIVE_FORMATS}


def test_serve_sh_refuses_an_empty_model_store(tmp_path: Path) -> None:
    config = tmp_path / "config.properties"
    config.write_text("")
    (tmp_path / "store").mkdir()
    result = subprocess.run(["bash", str(DEPLOY / "serve.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "MODEL_STORE": str(tmp_path / "store"),
                                 "SERVE_CONFIG": str(config), "TMPDIR": str(tmp_path)})
    assert result.returncode == 1
    assert f"no .mar archives in {tmp_path / 'store'}" in result.stderr
