"""Every manifest in examples/kubernetes/ (subfolders included) against the Kubernetes
schemas, oldest and newest versions kubernetes-validate ships; and what the webhook's
manifests must say."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from kubernetes_validate.utils import all_versions

from envwrap.config import parse_args
from envwrap.modes.webhook_patch import LABEL, review_response
from testsupport import ROOT
from testsupport.webhook import IMAGE, VERSIONS, apply, review, validate

MANIFESTS = sorted((ROOT / "examples" / "kubernetes").rglob("*.yaml"))
WEBHOOK = ROOT / "examples" / "kubernetes" / "webhook"
#: native sidecars (an init container's restartPolicy) are in the schemas from 1.28 on
#: and on by default from 1.29
NATIVE_SIDECARS = "1.29.0"
#: cert-manager's kinds are CRDs: no schema in kubernetes-validate; checked by hand below
CERT_MANAGER = "cert-manager.io/v1"


def documents(path: Path) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(kind: str) -> list[dict[str, object]]:
    """The webhook's own objects (webhook.yaml, certificate.yaml) of one kind."""
    paths = (WEBHOOK / "webhook.yaml", WEBHOOK / "certificate.yaml")
    return [d for p in paths for d in documents(p) if d["kind"] == kind]


def pod_spec(doc: dict[str, object]) -> dict[str, object]:
    spec = doc["spec"]
    assert isinstance(spec, dict)
    template = spec.get("template") or spec["jobTemplate"]["spec"]["template"]  # type: ignore[index]
    return template["spec"]  # type: ignore[no-any-return]


def uses_native_sidecar(doc: dict[str, object]) -> bool:
    if doc.get("kind") not in ("Deployment", "Job", "StatefulSet", "DaemonSet", "Pod"):
        return False
    spec = doc["spec"] if doc["kind"] == "Pod" else pod_spec(doc)
    return any("restartPolicy" in c for c in spec.get("initContainers", []))  # type: ignore[union-attr]


def _newer(version: str, floor: str) -> bool:
    return tuple(map(int, version.split("."))) >= tuple(map(int, floor.split(".")))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT / "examples" / "kubernetes")))
def test_manifest_passes_the_oldest_and_newest_schemas(path: Path) -> None:
    for doc in documents(path):
        if doc["apiVersion"] == CERT_MANAGER:
            continue
        versions = VERSIONS
        if uses_native_sidecar(doc):
            versions = [v for v in VERSIONS if _newer(v, NATIVE_SIDECARS)]
            oldest = min((v for v in all_versions() if _newer(v, NATIVE_SIDECARS)),
                         key=lambda v: tuple(map(int, v.split("."))))
            versions = sorted({oldest, *versions})
        validate(doc, versions)


def test_cert_manager_objects_have_what_cert_manager_requires() -> None:
    (issuer,) = by_kind("Issuer")
    (certificate,) = by_kind("Certificate")
    (service,) = by_kind("Service")
    assert issuer["apiVersion"] == certificate["apiVersion"] == CERT_MANAGER
    assert "selfSigned" in issuer["spec"]  # type: ignore[operator]
    spec = certificate["spec"]
    assert isinstance(spec, dict)
    assert spec["issuerRef"]["name"] == issuer["metadata"]["name"]  # type: ignore[index]
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]  # type: ignore[index]
    assert f"{name}.{namespace}.svc" in spec["dnsNames"]
    (deployment,) = by_kind("Deployment")
    volumes = pod_spec(deployment)["volumes"]
    assert {"name": "tls", "secret": {"secretName": spec["secretName"]}} in volumes  # type: ignore[operator]


def test_webhook_configuration_sends_only_opted_in_pods_and_not_its_own_namespace() -> None:
    (config,) = by_kind("MutatingWebhookConfiguration")
    (certificate,) = by_kind("Certificate")
    (service,) = by_kind("Service")
    annotations = config["metadata"]["annotations"]  # type: ignore[index]
    assert annotations["cert-manager.io/inject-ca-from"] == (  # type: ignore[index]
        f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}")  # type: ignore[index]
    (hook,) = config["webhooks"]  # type: ignore[misc]
    assert hook["objectSelector"] == {"matchLabels": {LABEL: "true"}}
    (expression,) = hook["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name" and expression["operator"] == "NotIn"
    assert service["metadata"]["namespace"] in expression["values"]  # type: ignore[index]
    assert hook["failurePolicy"] in ("Fail", "Ignore")
    assert 1 <= hook["timeoutSeconds"] < 10
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]  # type: ignore[index]
    assert hook["clientConfig"]["service"]["path"] == "/mutate"
    assert hook["admissionReviewVersions"] == ["v1"] and hook["sideEffects"] == "None"


def test_webhook_deployment_is_replicated_probed_non_root_and_read_only() -> None:
    (deployment,) = by_kind("Deployment")
    (budget,) = by_kind("PodDisruptionBudget")
    assert deployment["spec"]["replicas"] == 2  # type: ignore[index]
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]  # type: ignore[index]
    assert budget["spec"]["minAvailable"] == 1  # type: ignore[index]
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True  # type: ignore[index]
    (container,) = spec["containers"]  # type: ignore[misc]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    command = container["command"]
    settings = parse_args(command[1:], {})  # the real parser: a wrong flag fails here
    assert settings.command == "webhook"
    assert settings.image == container["image"]
    assert settings.tls_cert and settings.tls_cert.startswith("/tls/")


def test_node_service_example_is_opted_in_and_its_injected_pod_is_valid() -> None:
    (workload,) = [d for d in documents(WEBHOOK / "node-server.yaml") if d["kind"] == "Deployment"]
    template = workload["spec"]["template"]  # type: ignore[index]
    assert template["metadata"]["labels"][LABEL] == "true"
    options = shlex.split(template["metadata"]["annotations"]["envwrap/options"])
    settings = parse_args([*options, "--", "node", "server.js"], {})
    assert settings.watch and settings.on_change == "handoff" and settings.ready == "notify"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]}
    answer, mutation = review_response(json.dumps(review(pod)).encode(), IMAGE)
    assert mutation.injected == ["server"] and not mutation.warnings
    mutated = apply(pod, answer)
    validate(mutated)
    (server,) = mutated["spec"]["containers"]  # type: ignore[index]
    assert server["command"] == ["/envwrap/envwrap", *options, "--", "node", "server.js"]


def test_job_sidecar_is_native_so_the_job_completes() -> None:
    (job,) = documents(WEBHOOK / "job-native-sidecar.yaml")
    spec = pod_spec(job)
    (sidecar,) = spec["initContainers"]  # type: ignore[misc]
    assert sidecar["restartPolicy"] == "Always"
    settings = parse_args(sidecar["args"], {})
    assert settings.command == "sidecar" and settings.render
    assert not any(c.get("restartPolicy") for c in spec["containers"])  # type: ignore[union-attr]
