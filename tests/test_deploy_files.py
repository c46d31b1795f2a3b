"""The deployment files users copy: Kubernetes manifests, Dockerfiles, examples."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

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
            if (words[:1] and Path(str(words[0])).name == "envwrap") or container.get("name") == "envwrap":
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


# --- the bundle (DESIGN §13): built in Dockerfile.sidecar, copied, injected ---------


def instructions(path: Path) -> list[dict[str, str]]:
    parser = DockerfileParser(fileobj=path.open("rb"))  # type: ignore[arg-type]
    return list(parser.structure)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_copies_from_stages_it_defines(path: Path) -> None:
    stages: set[str] = set()
    for item in instructions(path):
        if item["instruction"] == "FROM":
            words = item["value"].split()
            assert len(words) in (1, 3), item["content"]
            if len(words) == 3:
                assert words[1].upper() == "AS"
                stages.add(words[2])
        elif item["instruction"] == "COPY" and "--from=" in item["value"]:
            source = re.search(r"--from=(\S+)", item["value"])
            assert source and source.group(1) in stages, item["content"]


def test_sidecar_dockerfile_builds_the_bundle_into_a_stage_of_its_own() -> None:
    items = instructions(ROOT / "Dockerfile.sidecar")
    assert any(i["instruction"] == "RUN" and "scripts/bundle.sh /opt/envwrap" in i["value"] for i in items)
    froms = [i["value"] for i in items if i["instruction"] == "FROM"]
    assert any(v.endswith(" AS bundle") for v in froms)
    # The last stage (what `docker build` gives without --target) stays the sidecar.
    assert not froms[-1].endswith(" AS bundle")


def test_app_image_copies_the_bundle_and_installs_no_python() -> None:
    path = ROOT / "examples" / "docker" / "Dockerfile"
    items = instructions(path)
    copies = [i["value"] for i in items if i["instruction"] == "COPY" and "--from=" in i["value"]]
    assert any(v.endswith("/opt/envwrap /opt/envwrap") for v in copies)
    for item in items:
        if item["instruction"] in ("RUN", "FROM"):
            assert "python" not in item["value"].lower() and "pip" not in item["value"].split(), item
    assert "Dockerfile.sidecar --target bundle -t envwrap-bundle" in path.read_text()
    assert "ARG ENVWRAP_BUNDLE=envwrap-bundle" in path.read_text()


def test_kubernetes_injects_the_bundle_without_rebuilding_the_app_image() -> None:
    docs = documents(ROOT / "examples" / "kubernetes" / "inject-bundle.yaml")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]  # type: ignore[index]
    (volume,) = [v for v in pod["volumes"] if "emptyDir" in v]
    (init,) = pod["initContainers"]
    (mount,) = [m for m in init["volumeMounts"] if m["name"] == volume["name"]]
    assert init["command"] == ["cp", "-R", "/opt/envwrap/.", f"{mount['mountPath']}/"]
    (app,) = pod["containers"]
    (app_mount,) = [m for m in app["volumeMounts"] if m["name"] == volume["name"]]
    assert app_mount["mountPath"] == "/envwrap" and app_mount["readOnly"] is True
    assert app["command"] == ["/envwrap/envwrap", "--init", "--watch", "--", "node", "server.js"]
