"""Offline schema checks for deploy/: Kubernetes objects and KServe InferenceServices.

Kubernetes: the strict JSON schemas that ``kubernetes-validate`` ships (unknown fields are errors).
KServe publishes no schema package; its Python SDK holds the API types generated from the CRD's
OpenAPI (``openapi_types``/``attribute_map`` per class, required fields in the setters). ``make
setup`` unpacks that SDK without its dependencies (it pins psutil<6 and protobuf<7, which our stack
outgrew) and we read those tables with ``ast``, never importing it. Kubernetes types inside an
InferenceService (containers, volumes, security contexts) go back to the Kubernetes schemas.
"""
from __future__ import annotations

import ast
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import importlib_resources
import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

KUBERNETES_VERSIONS = ("1.30", "1.37")  # the oldest and newest Kubernetes we claim
KSERVE_SDK = Path(sys.prefix) / "kserve-sdk" / "kserve" / "models"
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}
DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
REQUIRED_SETTER = re.compile(r"Invalid value for `(\w+)`, must not be `None`")


def read_properties(path: Path) -> dict[str, str]:
    """A TorchServe config.properties as key -> value (comment and blank lines skipped)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def validate_kubernetes(document: dict, version: str) -> None:
    """Raise ``kubernetes_validate.ValidationError`` unless ``document`` fits the strict schema."""
    kubernetes_validate.validate(document, version, strict=True)


@lru_cache(maxsize=None)
def _definitions(version: str) -> tuple[Registry, dict[str, Any]]:
    directory = next(d for d in sorted(importlib_resources.files("kubernetes_validate")
                                       .joinpath("kubernetes-json-schema").iterdir(), key=lambda d: d.name)
                     if d.name.startswith(f"v{version}.") and d.name.endswith("-local-strict"))
    contents = json.loads(directory.joinpath("_definitions.json").read_text())
    if contents["$id"] != DEFINITIONS_ID:
        raise ValueError(f"kubernetes-validate's definitions moved: {contents['$id']}")
    return Registry().with_resource(DEFINITIONS_ID, Resource.from_contents(contents)), contents["$defs"]


def kubernetes_definition_errors(value: Any, sdk_type: str, version: str, path: str) -> list[str]:
    """Errors of ``value`` against the Kubernetes definition an SDK type name (``V1Container``) stands for."""
    registry, definitions = _definitions(version)
    match = re.fullmatch(r"(?:K8sIoApi(\w+?))?V1(\w+)", sdk_type)
    if match is None:
        return [f"{path}: unknown type {sdk_type}"]
    group, name = match.groups()
    if group:  # K8sIoApiAppsV1DeploymentStrategy -> io.k8s.api.apps.v1.DeploymentStrategy
        candidates = [f"io.k8s.api.{group.lower()}.v1.{name}"]
    else:      # V1Container -> io.k8s.api.core.v1.Container; V1ObjectMeta -> ...meta.v1.ObjectMeta
        candidates = [f"io.k8s.api.core.v1.{name}"] + sorted(k for k in definitions if k.endswith(f".v1.{name}"))
    key = next((k for k in candidates if k in definitions), None)
    if key is None:
        return [f"{path}: no Kubernetes definition for {sdk_type}"]
    validator = jsonschema.Draft202012Validator({"$ref": f"{DEFINITIONS_ID}#/$defs/{key}"}, registry=registry)
    return [f"{path}{''.join(f'.{p}' for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]


@dataclass(frozen=True)
class SdkType:
    """One generated KServe class: JSON key -> SDK type, and the JSON keys it requires."""

    fields: dict[str, str]
    required: frozenset[str]


def load_kserve_types(models_dir: Path = KSERVE_SDK) -> dict[str, SdkType]:
    """Every class in the KServe SDK's generated models, read from source."""
    if not models_dir.is_dir():
        raise FileNotFoundError(f"KServe SDK models not found at {models_dir}: run 'make setup'")
    types = {}
    for source in sorted(models_dir.glob("v1*.py")):
        text = source.read_text()
        tree = ast.parse(text)
        for node in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            tables = {t.targets[0].id: ast.literal_eval(t.value) for t in node.body
                      if isinstance(t, ast.Assign) and isinstance(t.targets[0], ast.Name)
                      and t.targets[0].id in ("openapi_types", "attribute_map")}
            if len(tables) == 2:
                python_to_json = tables["attribute_map"]
                required = {python_to_json[m] for m in REQUIRED_SETTER.findall(ast.get_source_segment(text, node) or "")}
                types[node.name] = SdkType({python_to_json[k]: v for k, v in tables["openapi_types"].items()},
                                           frozenset(required))
    return types


def kserve_errors(value: Any, sdk_type: str, types: dict[str, SdkType], version: str, path: str = "") -> list[str]:
    """Errors of ``value`` against an SDK type: unknown or missing fields, wrong types, at any depth."""
    if match := re.fullmatch(r"list\[(.+)\]", sdk_type):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [e for i, item in enumerate(value) for e in kserve_errors(item, match.group(1), types, version, f"{path}[{i}]")]
    if match := re.fullmatch(r"dict\(str, (.+)\)", sdk_type):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {type(value).__name__}"]
        return [e for k, v in value.items() for e in kserve_errors(v, match.group(1), types, version, f"{path}.{k}")]
    if sdk_type == "ResourceQuantity":
        return [] if isinstance(value, (str, int, float)) else [f"{path}: not a quantity: {value!r}"]
    if sdk_type in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[sdk_type]) and not (sdk_type == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {sdk_type}, got {value!r}"]
    if sdk_type in types:
        return _object_errors(value, types[sdk_type], types, version, path)
    return kubernetes_definition_errors(value, sdk_type, version, path or sdk_type)


def _object_errors(value: Any, spec: SdkType, types: dict[str, SdkType], version: str, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping, got {type(value).__name__}"]
    errors = [f"{path}.{key}: unknown field (known: {', '.join(sorted(spec.fields))})"
              for key in value if key not in spec.fields]
    errors += [f"{path}.{key}: required field missing" for key in sorted(spec.required - value.keys())]
    for key, item in value.items():
        if key in spec.fields:
            errors += kserve_errors(item, spec.fields[key], types, version, f"{path}.{key}")
    return errors


def inference_service_errors(document: dict, version: str, types: dict[str, SdkType]) -> list[str]:
    """Errors of an InferenceService manifest (status is the controller's, not ours)."""
    if document.get("apiVersion") != "serving.kserve.io/v1beta1" or document.get("kind") != "InferenceService":
        return [f"not a serving.kserve.io/v1beta1 InferenceService: {document.get('apiVersion')}/{document.get('kind')}"]
    return kserve_errors({k: v for k, v in document.items() if k != "status"}, "V1beta1InferenceService",
                         types, version, "InferenceService")
