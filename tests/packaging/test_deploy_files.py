"""The deployment files users copy: Kubernetes manifests, Dockerfiles, examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from envwrap.config import OPTIONS, parse_args
from envwrap.refs import parse_value
from testsupport import ROOT

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


def dockerfile_command(path: Path) -> list[str]:
    """ENTRYPOINT + CMD of a Dockerfile whose both are in exec (JSON) form."""
    text = path.read_text()
    entrypoint = re.findall(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    cmd = re.findall(r"^CMD (\[.*\])$", text, re.M)
    return [*json.loads(entrypoint[-1]), *(json.loads(cmd[-1]) if cmd else [])]


def test_app_image_uses_envwrap_as_init_entrypoint() -> None:
    path = ROOT / "examples" / "docker" / "Dockerfile"
    words = dockerfile_command(path)
    assert words[0] == "envwrap"
    assert {"--init", "--watch"} <= set(words[: words.index("--")])
    assert words[words.index("--") + 1 :] == ["node", "server.js"]
    users = re.findall(r"^USER (\S+)", path.read_text(), re.M)
    assert users and users[-1] not in ("root", "0")


def node_service_commands() -> list[tuple[str, list[str], list[int]]]:
    """Every place that runs the team's Node service under envwrap: (where, argv, ports)."""
    found = [("Dockerfile", dockerfile_command(ROOT / "examples" / "docker" / "Dockerfile"), [])]
    for path in MANIFESTS:
        for doc in documents(path):
            for container in containers(doc):
                words = [*container.get("command", []), *container.get("args", [])]  # type: ignore[misc]
                if words[:1] == ["envwrap"] and "server.js" in words:
                    ports = [p["containerPort"] for p in container.get("ports", [])  # type: ignore[attr-defined]
                             if p.get("name") != "metrics"]  # envwrap's own, not the service's
                    found.append((path.name, words, ports))
    return found


@pytest.mark.parametrize("where, words, ports", node_service_commands(),
                         ids=[where for where, _, _ in node_service_commands()])
def test_node_service_rotates_by_handoff_on_a_socket_envwrap_holds(
        where: str, words: list[str], ports: list[int]) -> None:
    # The same parser the real command line goes through: a flag that does not
    # exist, a bad value or handoff without --ready fails here as it would in the pod.
    settings = parse_args(words[1:], {})
    assert settings.on_change == "handoff", where
    assert settings.ready == "notify", where  # server.js sends READY=1 (examples/node-server)
    assert settings.listen, where
    assert settings.argv == ["node", "server.js"], where
    for port in ports:
        assert any(address.endswith(f":{port}") for address in settings.listen), (where, port)


@pytest.mark.parametrize("name", ["vault.env", "aws.env", ".env.example"])
def test_example_env_files_parse(name: str) -> None:
    from envwrap.sources import load_dotenv_files

    values = load_dotenv_files([str(ROOT / "examples" / "node-server" / name)], {})
    example = load_dotenv_files([str(ROOT / "examples" / "node-server" / ".env.example")], {})
    assert set(example) <= set(values)
    for value in values.values():
        parse_value(value)


def test_the_reference_documents_every_option_and_its_variable() -> None:
    reference = (ROOT / "docs" / "reference.md").read_text()
    for option in OPTIONS:
        assert f"`{option.flag}" in reference, option.flag
        assert option.env_name in reference, option.env_name


def _envwrap_containers(doc: dict[str, object]) -> list[dict[str, object]]:
    found = []
    for container in containers(doc):
        words = [*container.get("command", []), *container.get("args", [])]  # type: ignore[misc]
        if container.get("name") == "envwrap" or (words and Path(str(words[0])).name == "envwrap"):
            found.append(container)
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_probes_use_envwraps_readyz_and_healthz(path: Path) -> None:
    seen = 0
    for doc in documents(path):
        for container in _envwrap_containers(doc):
            seen += 1
            env = {item["name"]: item["value"] for item in container.get("env", [])}  # type: ignore[attr-defined]
            port = int(env["ENVWRAP_METRICS"].rpartition(":")[2])
            ports = {p.get("name"): p["containerPort"] for p in container["ports"]}  # type: ignore[attr-defined]
            assert ports["metrics"] == port
            ready, live = container["readinessProbe"], container["livenessProbe"]
            assert ready["httpGet"] == {"path": "/readyz", "port": "metrics"}  # type: ignore[index]
            assert live["httpGet"] == {"path": "/healthz", "port": "metrics"}  # type: ignore[index]
    assert seen, "no envwrap container"


def _exposed_metric_names() -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    from envwrap.telemetry.metrics import Metrics

    metrics = Metrics()
    for event, fields in (
        ("access", {"variable": "A", "store": "vault", "path": "p", "outcome": "ok"}),
        ("running", {"uses": [["A", "vault", "p", "", "1"]]}),
        ("check", {"store": "vault", "path": "p", "outcome": "unavailable"}),
        ("lease", {"path": "p", "outcome": "obtained", "expires": 1.0}),
        ("start", {"pid": 1, "reason": "initial"}),
    ):
        metrics.handle(event, fields)
    from prometheus_client.exposition import generate_latest

    class Registry:
        def collect(self) -> object:
            return metrics.collect()

    text = generate_latest(Registry()).decode()  # type: ignore[arg-type]
    return {sample.name for family in text_string_to_metric_families(text)
            for sample in family.samples}


def test_prometheus_example_scrapes_envwrap_and_alerts_on_real_metrics() -> None:
    folder = ROOT / "examples" / "prometheus"
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (folder / rule_file).exists()
    assert any(job.get("metrics_path", "/metrics") == "/metrics"
               for job in config["scrape_configs"])
    assert "9102" in (folder / "prometheus.yml").read_text()
    rules = yaml.safe_load((folder / "envwrap-alerts.yml").read_text())
    exposed = _exposed_metric_names()
    alerts = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = set(re.findall(r"\benvwrap_[a-z_]+", rule["expr"]))
            assert names and names <= exposed, (rule["alert"], names - exposed)
            assert rule["expr"].count("(") == rule["expr"].count(")")
            alerts[rule["alert"]] = rule
    assert alerts["EnvwrapSecretStoreDown"]["for"] == "5m"
    assert "envwrap_store_up" in alerts["EnvwrapSecretStoreDown"]["expr"]
    assert alerts["EnvwrapStaleSecretVersion"]["for"] == "1h"
    assert "envwrap_secret_info" in alerts["EnvwrapStaleSecretVersion"]["expr"]


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
    # with fsGroup, the kubelet would re-own the cache file at every mount, and a file
    # changed after envwrap wrote it is refused (docs/SECURITY.md, "Cache")
    security = spec["template"]["spec"]["securityContext"]
    assert "fsGroup" not in security or security["fsGroupChangePolicy"] == "OnRootMismatch"


# --- the bundle (docs/containers.md): built in Dockerfile.sidecar, copied, injected ---------


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
