"""The deployment files users copy: Kubernetes manifests, Dockerfiles, examples."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from envwrap.config import OPTIONS
from envwrap.refs import parse_value
from tests.conftest import ROOT

MANIFESTS = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))
DOCKERFILES = [ROOT / "Dockerfile.sidecar", ROOT / "examples" / "docker" / "Dockerfile"]


def documents(path: Path) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def containers(doc: dict[str, object]) -> list[dict[str, object]]:
    spec = doc.get("spec", {})
    assert isinstance(spec, dict)
    pod = spec["template"]["spec"] if "template" in spec else spec
    return list(pod.get("containers", []))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, "1.30", strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_references_and_options_parse(path: Path) -> None:
    flags = {option.flag for option in OPTIONS}
    for doc in documents(path):
        for container in containers(doc):
            for item in container.get("env", []):  # type: ignore[attr-defined]
                parse_value(item["value"])  # raises on a malformed reference
            words = [*container.get("command", []), *container.get("args", [])]  # type: ignore[misc]
            if "envwrap" in words[:1] or container.get("name") == "envwrap":
                for word in words:
                    if word.startswith("--") and word != "--":
                        assert word.split("=")[0] in flags, word


def test_sidecar_pod_shares_process_namespace_and_memory_volume() -> None:
    (pod,) = documents(ROOT / "examples" / "kubernetes" / "sidecar.yaml")
    spec = pod["spec"]
    assert isinstance(spec, dict)
    assert spec["shareProcessNamespace"] is True
    assert spec["volumes"][0]["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_copies_files_that_exist(path: Path) -> None:
    for line in path.read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            sources = line.split()[1:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name}: {source} does not exist"


def test_sidecar_image_runs_envwrap_as_non_root() -> None:
    text = (ROOT / "Dockerfile.sidecar").read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["envwrap"\]', text, re.M)


def test_app_image_uses_envwrap_as_init_entrypoint() -> None:
    text = (ROOT / "examples" / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["envwrap", "--init", "--watch", "--"]' in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")


@pytest.mark.parametrize("name", ["vault.env", "aws.env", ".env.example"])
def test_example_env_files_parse(name: str) -> None:
    from envwrap.sources import load_dotenv_file

    values = load_dotenv_file(str(ROOT / "examples" / "node-server" / name))
    example = load_dotenv_file(str(ROOT / "examples" / "node-server" / ".env.example"))
    assert set(example) <= set(values)
    for value in values.values():
        parse_value(value)


def test_readme_documents_every_option_and_its_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    for option in OPTIONS:
        assert f"`{option.flag}" in readme, option.flag
        assert option.env_name in readme, option.env_name


def test_cache_example_keeps_the_key_apart_from_the_cache() -> None:
    (statefulset,) = documents(ROOT / "examples" / "kubernetes" / "cache.yaml")
    spec = statefulset["spec"]
    assert isinstance(spec, dict)
    (container,) = containers(statefulset)
    command = container["command"]
    assert isinstance(command, list)
    cache = command[command.index("--cache") + 1]
    key = command[command.index("--cache-key-file") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}  # type: ignore[index]
    assert cache.startswith(mounts["cache"] + "/") and key.startswith(mounts["cache-key"] + "/")
    (key_volume,) = spec["template"]["spec"]["volumes"]
    assert key_volume["name"] == "cache-key" and "secret" in key_volume
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "cache"
