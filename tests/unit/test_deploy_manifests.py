"""deploy/k8s and deploy/kserve: valid against the Kubernetes and KServe schemas, and consistent."""
from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import ValidationError

from support.manifests import (KUBERNETES_VERSIONS, inference_service_errors, load_kserve_types, read_properties,
                               validate_kubernetes)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
INFERENCE_SERVICE = DEPLOY / "kserve" / "inferenceservice.yaml"


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _objects() -> dict[str, dict]:
    """kind -> object, from every file the kustomization lists."""
    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    return {d["kind"]: d for name in resources for d in _documents(K8S / name)}


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def kserve_types():
    return load_kserve_types()


def test_the_kustomization_lists_every_manifest_in_its_folder() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert set(_objects()) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_fit_the_strict_schemas(version: str) -> None:
    for manifest in _objects().values():
        validate_kubernetes(manifest, version)


def test_the_kubernetes_check_rejects_a_misspelled_field() -> None:
    deployment = copy.deepcopy(_objects()["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(ValidationError, match="'resource' was unexpected"):
        validate_kubernetes(deployment, KUBERNETES_VERSIONS[-1])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_renders_every_object() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    assert sorted(d["kind"] for d in objects) == sorted(_objects())
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "servekit" for d in objects)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_inference_service_fits_kserve_and_kubernetes_types(version: str, kserve_types) -> None:
    assert inference_service_errors(_documents(INFERENCE_SERVICE)[0], version, kserve_types) == []


def test_the_kserve_check_rejects_unknown_fields_wrong_types_and_missing_parts(kserve_types) -> None:
    service = _documents(INFERENCE_SERVICE)[0]
    predictor = copy.deepcopy(service["spec"]["predictor"])
    predictor["minReplica"] = 1
    predictor["scaleTarget"] = "70"
    predictor["containers"][0]["ports"][0]["containerPort"] = "8080"
    errors = inference_service_errors({**service, "spec": {"predictor": predictor}}, KUBERNETES_VERSIONS[-1], kserve_types)
    assert any(e.startswith("InferenceService.spec.predictor.minReplica: unknown field") for e in errors)
    assert "InferenceService.spec.predictor.scaleTarget: expected int, got '70'" in errors
    assert any("containers[0].ports.0.containerPort: '8080' is not of type 'integer'" in e for e in errors)
    assert inference_service_errors({**service, "spec": {}}, KUBERNETES_VERSIONS[-1], kserve_types) == [
        "InferenceService.spec.predictor: required field missing"]


def test_pods_serve_the_ports_the_container_config_opens() -> None:
    config = read_properties(DEPLOY / "config.properties")
    inference, metrics = _port(config["inference_address"]), _port(config["metrics_address"])
    objects = _objects()
    pod = objects["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": inference, "metrics": metrics}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "http"}
    assert {p["targetPort"] for p in objects["Service"]["spec"]["ports"]} == set(ports)
    allowed = {p["port"] for rule in objects["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {inference, metrics}

    isvc = _documents(INFERENCE_SERVICE)[0]
    predictor = isvc["spec"]["predictor"]
    kserve_container = predictor["containers"][0]
    assert kserve_container["name"] == "kserve-container"  # the name KServe routes to
    assert [p["containerPort"] for p in kserve_container["ports"]] == [inference]
    assert isvc["metadata"]["annotations"]["prometheus.kserve.io/port"] == str(metrics)
    assert kserve_container["image"] == container["image"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert kserve_container[probe]["httpGet"] == {"path": "/ping", "port": inference}


def test_selectors_and_targets_point_at_the_deployment_pods() -> None:
    objects = _objects()
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], objects["Service"]["spec"]["selector"],
                     objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
                     objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


@pytest.mark.parametrize("pod_spec", ["deployment", "inference service"])
def test_pods_are_guaranteed_read_only_and_unprivileged(pod_spec: str) -> None:
    spec = (_objects()["Deployment"]["spec"]["template"]["spec"] if pod_spec == "deployment"
            else _documents(INFERENCE_SERVICE)[0]["spec"]["predictor"])
    container = spec["containers"][0]
    # requests == limits: Guaranteed QoS, and the handlers size threads from the CPU limit.
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    # serve.sh writes only under TMPDIR, which must be a writable volume.
    tmpdir = next(e["value"] for e in container["env"] if e["name"] == "TMPDIR")
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert {v["name"] for v in spec["volumes"] if "emptyDir" in v} >= {mounted[tmpdir]}
