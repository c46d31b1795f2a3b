"""The vault:// backend in-process, against a real OpenBao dev server."""

from __future__ import annotations

import http.client
import itertools
import json
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envwrap.backends import Fetched, Lease
from envwrap.backends.contract import revision_of
from envwrap.backends.vault import STATUS_ERRORS, VaultBackend, map_error
from envwrap.backends.vault.auth import RENEW_AT
from envwrap.backends.vault.errors import StatusError, UnexpectedReply
from envwrap.backends.vault.transport import Transport
from envwrap.errors import (
    AuthError,
    ConfigError,
    EnvwrapError,
    NotFoundError,
    ReplyRefusedError,
    StoreUnavailableError,
)
from envwrap.refs import Locator
from envwrap.resolve import select
from envwrap.testing import BackendContract
from testsupport.fake_store import (
    FakeStore,
    Reply,
    hang,
    kv2_secret,
    raw,
    redirect,
    reply,
    vault_kv2,
)
from testsupport.fixtures_vault import (
    FAKE_KUBERNETES_CA,
    FakeServer,
    OpenBao,
    free_port,
    service_account_jwt,
)
from testsupport.helpers import assert_not_leaked, canary, run_envwrap
from testsupport.proxy import TcpProxy

_counter = itertools.count()


def unique(prefix: str = "app") -> str:
    return f"{prefix}-{next(_counter)}-{secrets.token_hex(3)}"


def loc(path: str, **params: str) -> Locator:
    return Locator("vault", path, tuple(params.items()))


def backend_for(openbao: OpenBao, **environ: str) -> VaultBackend:
    settings = {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.token, "HOME": "/nonexistent"}
    settings.update(environ)
    return VaultBackend({k: v for k, v in settings.items() if v})


Sent = tuple[str, str, dict[str, str]]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """Every request the Vault transport sends: method, target, headers."""
    sent: list[Sent] = []
    original = Transport._send

    def spy(self: Transport, conn: Any, method: str, target: str, *rest: Any) -> Any:
        sent.append((method, target, dict(rest[0])))
        return original(self, conn, method, target, *rest)

    monkeypatch.setattr(Transport, "_send", spy)
    return sent


@pytest.fixture
def vault(openbao: OpenBao) -> Any:
    backend = backend_for(openbao)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def kv1(openbao: OpenBao) -> str:
    openbao.enable_kv1("kv1")
    return "kv1"


# -- the backend contract ---------------------------------------------------------------


class VaultStore:
    """KV v2 on ``secret/``. Vault secrets are key-value maps: a plain-text value
    is stored as ``{"value": TEXT}``, which the contract selects by ``plain_key``."""

    has_versions = True
    plain_key = "value"

    def __init__(self, openbao: OpenBao) -> None:
        self.openbao = openbao
        self.backend = backend_for(openbao)

    def write(self, name: str, data: str | dict[str, Any]) -> None:
        self.openbao.kv2_put(name, {"value": data} if isinstance(data, str) else data)

    def locator(self, name: str) -> Locator:
        return loc(f"secret/{name}")

    def unique_name(self) -> str:
        return f"contract/{unique()}"


class TestVaultContract(BackendContract):
    @pytest.fixture
    def store(self, openbao: OpenBao) -> Any:
        store = VaultStore(openbao)
        yield store
        store.backend.close()

    def test_plain_text_is_stored_under_its_key(self, store: VaultStore) -> None:
        name, value = store.unique_name(), canary("plain")
        store.write(name, value)
        fetched = store.backend.read(store.locator(name))
        assert json.loads(select(fetched.data, None)) == {"value": value}

    def test_versions_are_kv2_numbers(self, store: VaultStore) -> None:
        name = store.unique_name()
        store.write(name, canary("v1"))
        before = revision_of(store.backend.probe(store.locator(name)))
        store.write(name, canary("v2"))
        after = revision_of(store.backend.probe(store.locator(name)))
        # the version number, and its creation time (a secret written again after
        # a delete starts over at 1)
        assert before is not None and after is not None
        assert (before.partition("@")[0], after.partition("@")[0]) == ("1", "2")
        assert before.partition("@")[2] and after.partition("@")[2]


# -- KV v2 and v1 -----------------------------------------------------------------------


def test_kv2_logical_and_api_paths_keys_and_versions(openbao: OpenBao, vault: VaultBackend) -> None:
    name = unique()
    first, second, third = canary("v1"), canary("v2"), canary("v3")
    for value in (first, second, third):
        openbao.kv2_put(name, {"password": value, "nested": {"port": 5432}})
    latest = vault.read(loc(f"secret/{name}"))
    assert (select(latest.data, "password"), latest.version) == (third, "3")
    assert select(latest.data, "/nested/port") == "5432"
    assert json.loads(select(latest.data, None))["password"] == third
    api = vault.read(loc(f"secret/data/{name}"))
    assert (select(api.data, "password"), api.version) == (third, "3")
    pinned = vault.read(loc(f"secret/{name}", version="1"))
    assert (select(pinned.data, "password"), pinned.version) == (first, "1")
    previous = vault.read(loc(f"secret/{name}", version="-1"))
    assert (select(previous.data, "password"), previous.version) == (second, "2")
    assert vault.read(loc(f"secret/{name}", version="-2")).version == "1"
    for values in (first, second, third):
        assert_not_leaked(values, repr(latest), repr(pinned), repr(previous))


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("secret/{name}", {"version": "9"}),
        ("secret/{name}", {"version": "-5"}),
        ("secret/{name}", {"version": "0"}),
        ("secret/{name}-missing", {}),
        ("secret/data/{name}-missing", {}),
        ("secret", {}),
        ("nosuchmount/{name}", {}),
    ],
)
def test_missing_secret_or_version_is_not_found(
    openbao: OpenBao, vault: VaultBackend, path: str, params: dict[str, str]
) -> None:
    name, value = unique(), canary()
    openbao.kv2_put(name, {"password": value})
    openbao.kv2_put(name, {"password": value})
    with pytest.raises(NotFoundError) as caught:
        vault.read(loc(path.format(name=name), **params))
    assert caught.value.exit_code == 65
    assert_not_leaked(value, str(caught.value))


def test_deleted_version_is_not_found(openbao: OpenBao, vault: VaultBackend) -> None:
    name, value = unique(), canary()
    openbao.kv2_put(name, {"password": value})
    openbao.kv2_put(name, {"password": canary()})
    openbao.client.secrets.kv.v2.delete_secret_versions(path=name, versions=[1])
    with pytest.raises(NotFoundError) as caught:
        vault.read(loc(f"secret/{name}", version="1"))
    assert "version 1" in str(caught.value)
    assert_not_leaked(value, str(caught.value))


def test_kv1_reads_as_it_is_without_version(openbao: OpenBao, kv1: str, vault: VaultBackend) -> None:
    name, value = unique(), canary()
    openbao.kv1_put(name, {"token": value, "list": [1, 2]}, mount=kv1)
    fetched = vault.read(loc(f"{kv1}/{name}"))
    assert select(fetched.data, "token") == value
    assert select(fetched.data, "/list/1") == "2"
    assert (fetched.version, fetched.lease) == (None, None)
    assert vault.probe(loc(f"{kv1}/{name}")) is None
    with pytest.raises(NotFoundError, match="KV version 2"):
        vault.read(loc(f"{kv1}/{name}", version="1"))
    with pytest.raises(NotFoundError) as caught:
        vault.read(loc(f"{kv1}/{name}-missing"))
    assert_not_leaked(value, str(caught.value))


def test_mount_detection_is_cached_and_each_path_read_once(
    openbao: OpenBao, kv1: str, vault: VaultBackend, wire: list[Sent]
) -> None:
    names = [unique("many") for _ in range(50)]
    values = [canary(f"c{i}") for i in range(50)]
    for name, value in zip(names, values, strict=True):
        openbao.kv2_put(name, {"v": value})
    openbao.kv1_put("one", {"v": "x"}, mount=kv1)
    outcomes = vault.read_many([loc(f"secret/{n}") for n in names] + [loc(f"{kv1}/one")])
    assert [select(o.data, "v") for o in outcomes if isinstance(o, Fetched)] == [*values, "x"]
    detections = [t for _, t, _ in wire if "/sys/internal/ui/mounts/" in t]
    assert len(detections) == 2, detections  # one per mount, not one per path
    assert len(wire) == 2 + 51
    probed = vault.probe(loc(f"secret/{names[0]}"))
    assert revision_of(probed) == outcomes[0].revision  # type: ignore[union-attr]
    assert str(revision_of(probed)).startswith("1@")
    assert len([t for _, t, _ in wire if "/sys/internal/ui/mounts/" in t]) == 2


# -- probe --------------------------------------------------------------------------------


def test_probe_reads_the_current_version_in_one_request_and_handles_pins(
    openbao: OpenBao, vault: VaultBackend, wire: list[Sent]
) -> None:
    name, values = unique(), [canary(f"v{i}") for i in range(3)]
    for value in values:
        openbao.kv2_put(name, {"k": value})
    current = vault.read(loc(f"secret/{name}"))
    assert current.version == "3" and str(current.revision).startswith("3@")
    wire.clear()
    probed = vault.probe(loc(f"secret/{name}"))
    # the poll reads the secret itself: one GET of its data, no metadata read
    assert [(m, t) for m, t, _ in wire] == [("GET", f"/v1/secret/data/{name}")]
    assert isinstance(probed, Fetched) and probed.revision == current.revision
    assert select(probed.data, "k") == values[2]
    assert revision_of(vault.probe(loc(f"secret/data/{name}"))) == current.revision
    assert vault.probe(loc(f"secret/{name}", version="2")) == "2"
    assert vault.probe(loc(f"secret/{name}", version="-1")) == "2"
    openbao.kv2_put(name, {"k": canary()})
    assert vault.probe(loc(f"secret/{name}", version="-1")) == "3"
    with pytest.raises(NotFoundError):
        vault.probe(loc(f"secret/{name}-missing"))


def test_metadata_denied_watching_works_and_previous_version_still_reads(
    openbao: OpenBao,
) -> None:
    name, old, new = unique(), canary("old"), canary("new")
    openbao.kv2_put(name, {"k": old})
    openbao.kv2_put(name, {"k": new})
    openbao.policy(f"data-only-{name}", f'path "secret/data/{name}" {{ capabilities = ["read"] }}')
    token = openbao.child_token([f"data-only-{name}"])
    backend = backend_for(openbao, VAULT_TOKEN=token)
    try:
        probed = backend.probe(loc(f"secret/{name}"))  # the policy that reads it is enough
        assert isinstance(probed, Fetched) and probed.version == "2"
        assert backend.probe(loc(f"secret/{name}", version="-1")) is None  # needs metadata
        previous = backend.read(loc(f"secret/{name}", version="-1"))
        assert (select(previous.data, "k"), previous.version) == (old, "1")
    finally:
        backend.close()


# -- auth -------------------------------------------------------------------------------


def test_bad_token_and_denied_path_are_auth_errors(openbao: OpenBao) -> None:
    name, value = unique(), canary()
    openbao.kv2_put(name, {"k": value})
    restricted = openbao.child_token(["default"])
    for token in ("not-a-token", restricted):
        backend = backend_for(openbao, VAULT_TOKEN=token)
        with pytest.raises(AuthError) as caught:
            backend.read(loc(f"secret/{name}"))
        backend.close()
        assert caught.value.exit_code == 77
        assert "403" in str(caught.value)
        assert_not_leaked(value, str(caught.value))
        assert token not in str(caught.value)


@pytest.mark.parametrize("shape", ["newline inside", "trailing newline", "not ascii"])
def test_a_token_that_cannot_be_a_header_is_refused_without_quoting_it(
    openbao: OpenBao, base_env: dict[str, str], shape: str
) -> None:
    secret_part = canary("token")
    token = {"newline inside": f"s.{secret_part}\nX-Evil: 1", "trailing newline": secret_part + "\n",
             "not ascii": f"{secret_part}\u00e9"}[shape]
    result = run_envwrap(
        ["--no-env-file", "--", "true"],
        env={**base_env, "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": token,
             "DB_PASSWORD": "vault://secret/app/db#password"},
    )
    assert result.returncode == 78, result.stderr
    assert "the Vault token holds a space, a line break" in result.stderr
    assert "Traceback" not in result.stderr
    assert_not_leaked(secret_part, result.stdout, result.stderr)


def test_settings_come_from_the_given_environ_not_os_environ(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name, value = unique(), canary()
    openbao.kv2_put(name, {"k": value})
    monkeypatch.setenv("VAULT_TOKEN", openbao.token)
    monkeypatch.setenv("VAULT_ADDR", openbao.addr)
    # no token in the mapping (and none in its HOME): hvac must not fall back to os.environ;
    # envwrap says there is no token (78) rather than sending none and reporting a denial
    backend = VaultBackend({"VAULT_ADDR": openbao.addr, "HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="no Vault token"):
        backend.read(loc(f"secret/{name}"))
    backend.close()
    (tmp_path / ".vault-token").write_text(openbao.token + "\n")
    backend = VaultBackend({"VAULT_ADDR": openbao.addr, "HOME": str(tmp_path)})
    assert select(backend.read(loc(f"secret/{name}")).data, "k") == value
    backend.close()


def test_approle_login_with_secret_id_and_secret_id_file(
    openbao: OpenBao, tmp_path: Path
) -> None:
    name, value = unique(), canary()
    openbao.kv2_put(name, {"k": value})
    openbao.policy("read-secret", 'path "secret/*" { capabilities = ["read"] }')
    role_id, secret_id = openbao.approle(f"role-{name}", ["read-secret"])
    direct = backend_for(openbao, VAULT_TOKEN="", VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id)
    assert select(direct.read(loc(f"secret/{name}")).data, "k") == value
    direct.close()
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(openbao.client.auth.approle.generate_secret_id(f"role-{name}")
                           ["data"]["secret_id"] + "\n")
    from_file = backend_for(openbao, VAULT_TOKEN="", VAULT_ROLE_ID=role_id,
                            VAULT_SECRET_ID_FILE=str(secret_file))
    assert select(from_file.read(loc(f"secret/{name}")).data, "k") == value
    from_file.close()
    wrong = backend_for(openbao, VAULT_TOKEN="", VAULT_ROLE_ID=role_id,
                        VAULT_SECRET_ID=canary("wrong"))
    with pytest.raises(AuthError, match="log in with approle") as caught:
        wrong.read(loc(f"secret/{name}"))
    wrong.close()
    assert_not_leaked(value, str(caught.value))
    missing = backend_for(openbao, VAULT_TOKEN="", VAULT_ROLE_ID=role_id,
                          VAULT_SECRET_ID_FILE=str(tmp_path / "absent"))
    with pytest.raises(AuthError, match="VAULT_SECRET_ID_FILE"):
        missing.read(loc(f"secret/{name}"))


@pytest.fixture(scope="module")
def kubernetes_auth(openbao: OpenBao, fake_kubernetes: FakeServer) -> str:
    """OpenBao's kubernetes auth, checking tokens against the fake TokenReview API."""
    if "kubernetes/" not in openbao.client.sys.list_auth_methods()["data"]:
        openbao.client.sys.enable_auth_method("kubernetes")
    openbao.client.write_data("auth/kubernetes/config", data={
        "kubernetes_host": fake_kubernetes.url,
        "kubernetes_ca_cert": FAKE_KUBERNETES_CA,
        "disable_local_ca_jwt": True,
    })
    openbao.policy("read-secret", 'path "secret/*" { capabilities = ["read"] }')
    openbao.client.write_data("auth/kubernetes/role/app", data={
        "bound_service_account_names": "app",
        "bound_service_account_namespaces": "default",
        "token_policies": "read-secret",
        "ttl": "1h",
    })
    return "app"


def test_kubernetes_login(
    openbao: OpenBao, kubernetes_auth: str, fake_kubernetes: FakeServer, tmp_path: Path
) -> None:
    name, value = unique(), canary()
    openbao.kv2_put(name, {"k": value})
    token_file = tmp_path / "token"
    token_file.write_text(service_account_jwt("default", "app"))
    backend = backend_for(openbao, VAULT_TOKEN="", VAULT_K8S_ROLE=kubernetes_auth,
                          VAULT_K8S_TOKEN_FILE=str(token_file))
    before = len(fake_kubernetes.requests)
    assert select(backend.read(loc(f"secret/{name}")).data, "k") == value
    assert fake_kubernetes.requests[before:] == [
        ("POST", "/apis/authentication.k8s.io/v1/tokenreviews")
    ]
    due = backend.upkeep()
    assert due is not None and 3500 * RENEW_AT < due <= 3600 * RENEW_AT
    backend.close()
    token_file.write_text(service_account_jwt("other-namespace", "app"))
    refused = backend_for(openbao, VAULT_TOKEN="", VAULT_AUTH_METHOD="kubernetes",
                          VAULT_K8S_ROLE=kubernetes_auth, VAULT_K8S_TOKEN_FILE=str(token_file))
    with pytest.raises(AuthError, match="log in with kubernetes"):
        refused.read(loc(f"secret/{name}"))
    missing = backend_for(openbao, VAULT_TOKEN="", VAULT_K8S_ROLE="app",
                          VAULT_K8S_TOKEN_FILE=str(tmp_path / "absent"))
    with pytest.raises(AuthError, match="VAULT_K8S_TOKEN_FILE"):
        missing.read(loc(f"secret/{name}"))


def test_upkeep_renews_the_token_or_logs_in_again(openbao: OpenBao) -> None:
    root = backend_for(openbao)
    assert root.upkeep() is None  # a root token never expires
    renewable = backend_for(openbao, VAULT_TOKEN=openbao.child_token(["default"], ttl="1h"))
    due = renewable.upkeep()
    assert due is not None and 3500 * RENEW_AT < due <= 3600 * RENEW_AT
    fixed = backend_for(openbao, VAULT_TOKEN=openbao.child_token(["default"], ttl="1h",
                                                                 renewable=False))
    assert fixed.upkeep() is None
    # an AppRole token at its max TTL cannot be extended: envwrap logs in again
    role_id, secret_id = openbao.approle("short", ["default"], token_ttl="30s",
                                         token_max_ttl="30s")
    short = backend_for(openbao, VAULT_TOKEN="", VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id)
    first = short.connection.token
    due = short.upkeep()
    assert due is not None and 25 * RENEW_AT < due <= 30 * RENEW_AT
    assert short.connection.token != first
    for backend in (root, renewable, fixed, short):
        backend.close()


# -- namespaces, leases ---------------------------------------------------------------------


def test_namespace_header_is_sent(openbao: OpenBao) -> None:
    namespace, value = unique("ns"), canary()
    openbao.client.write_data(f"sys/namespaces/{namespace}", data={})
    import hvac

    inside = hvac.Client(url=openbao.addr, token=openbao.token, namespace=namespace)
    inside.sys.enable_secrets_engine("kv", path="team", options={"version": "2"})
    inside.secrets.kv.v2.create_or_update_secret(path="app", secret={"k": value},
                                                 mount_point="team")
    backend = backend_for(openbao, VAULT_NAMESPACE=namespace)
    fetched = backend.read(loc("team/app"))
    assert (select(fetched.data, "k"), fetched.version) == (value, "1")
    assert revision_of(backend.probe(loc("team/app"))) == fetched.revision
    assert str(fetched.revision).startswith("1@")
    backend.close()
    outside = backend_for(openbao)
    with pytest.raises(NotFoundError) as caught:
        outside.read(loc("team/app"))
    assert_not_leaked(value, str(caught.value))


def test_dynamic_secret_keeps_its_lease_and_renews_it(
    vault: VaultBackend, rabbitmq_role: str, fake_rabbitmq: FakeServer
) -> None:
    fetched = vault.read(loc(rabbitmq_role))
    password = select(fetched.data, "password")
    assert select(fetched.data, "username").startswith("token-")
    assert fetched.version is None
    lease = fetched.lease
    assert lease is not None and lease.lease_id.startswith(f"{rabbitmq_role}/")
    assert (lease.duration, lease.renewable) == (600, True)
    assert ("PUT", f"/api/users/{select(fetched.data, 'username')}") in fake_rabbitmq.requests
    assert_not_leaked(password, repr(fetched), repr(lease), lease.lease_id)
    renewed = vault.renew(lease)
    assert renewed.lease_id == lease.lease_id and renewed.renewable
    assert 590 < renewed.duration <= 600
    assert vault.probe(loc(rabbitmq_role)) is None
    with pytest.raises(NotFoundError):
        vault.renew(Lease(f"{rabbitmq_role}/nosuchlease", 600, True))
    # a second read is a second user: each distinct path is read once per resolution
    assert select(vault.read(loc(rabbitmq_role)).data, "password") != password


# -- transport, settings, error mapping -----------------------------------------------------------


def test_unreachable_server_is_retryable_and_fast() -> None:
    backend = VaultBackend({"VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "VAULT_TOKEN": "t"})
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        backend.read(loc("secret/app"))
    assert caught.value.retryable and caught.value.exit_code == 69
    assert "cannot connect" in str(caught.value)
    assert time.monotonic() - started < 2


@pytest.fixture(scope="module")
def openbao_tls(tmp_path_factory: pytest.TempPathFactory, openbao: OpenBao) -> Any:
    """A second dev server, on https with its own CA (``openbao`` first: skips alike)."""
    from testsupport.fixtures_vault import start_openbao

    folder = tmp_path_factory.mktemp("openbao-tls")
    server = start_openbao(folder, tls=True)
    yield server, folder / "tls" / "vault-ca.pem"
    server.stop()


def test_tls_with_vault_cacert_and_skip_verify(openbao_tls: tuple[OpenBao, Path]) -> None:
    server, ca = openbao_tls
    value = canary()
    server.kv2_put("tls", {"k": value})
    environ = {"VAULT_ADDR": server.addr, "VAULT_TOKEN": server.token}
    for extra in ({"VAULT_CACERT": str(ca)}, {"VAULT_CAPATH": str(ca)},
                  {"VAULT_SKIP_VERIFY": "1"}):
        backend = VaultBackend({**environ, **extra})
        assert select(backend.read(loc("secret/tls")).data, "k") == value
        backend.close()
    untrusted = VaultBackend(environ)
    with pytest.raises(ConfigError, match="VAULT_CACERT") as caught:
        untrusted.read(loc("secret/tls"))
    assert not caught.value.retryable  # a wrong CA is not retried until --start-timeout
    assert_not_leaked(value, str(caught.value))


def test_https_goes_through_the_proxy_in_a_connect_tunnel(
    openbao_tls: tuple[OpenBao, Path],
) -> None:
    server, _ = openbao_tls
    value = canary()
    server.kv2_put("tunnel", {"k": value})
    port = server.addr.rsplit(":", 1)[1]
    proxy = TcpProxy(int(port), tunnel=True)
    # a name only the proxy knows: the request can only have gone through it; the dev
    # certificate does not name it, and the tunnel, not the certificate, is tested here
    backend = VaultBackend({"VAULT_ADDR": f"https://vault.internal.test:{port}",
                            "VAULT_TOKEN": server.token, "VAULT_SKIP_VERIFY": "1",
                            "HTTPS_PROXY": proxy.url.replace("//", "//user:pw@")})
    try:
        assert select(backend.read(loc("secret/tunnel")).data, "k") == value
    finally:
        backend.close()
        proxy.close()
    first = proxy.heads[0].decode()
    assert first.startswith(f"CONNECT vault.internal.test:{port} HTTP/1.")
    assert "Proxy-Authorization: Basic dXNlcjpwdw==" in first
    assert server.token not in first and value not in first  # the token is inside TLS


@pytest.mark.parametrize("setting", ["VAULT_CACERT", "VAULT_CLIENT_CERT"])
def test_a_certificate_file_that_cannot_be_loaded_is_a_setting_to_fix(
    openbao_tls: tuple[OpenBao, Path], tmp_path: Path, setting: str
) -> None:
    server, ca = openbao_tls
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    extra = {"VAULT_CACERT": str(broken)} if setting == "VAULT_CACERT" else {
        "VAULT_CACERT": str(ca), "VAULT_CLIENT_CERT": str(broken),
        "VAULT_CLIENT_KEY": str(broken)}
    backend = VaultBackend({"VAULT_ADDR": server.addr, "VAULT_TOKEN": server.token, **extra})
    try:
        with pytest.raises(ConfigError) as caught:
            backend.read(loc("secret/anything"))
    finally:
        backend.close()
    assert caught.value.exit_code == 78 and not caught.value.retryable
    assert str(broken) in str(caught.value) and setting in (caught.value.hint or "")
    assert "not base64" not in str(caught.value)


def test_plain_http_to_another_machine_warns(capsys: pytest.CaptureFixture[str]) -> None:
    for addr in ("http://127.0.0.1:8200", "http://localhost:8200", "http://[::1]:8200",
                 "https://vault.example.com"):
        VaultBackend({"VAULT_ADDR": addr})
    assert capsys.readouterr().err == ""
    VaultBackend({"VAULT_ADDR": "http://user:pw@vault.example.com:8200"})
    err = capsys.readouterr().err
    assert "plain http://" in err and "http://vault.example.com:8200" in err
    assert "pw@" not in err


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"VAULT_ADDR": "vault.example.com:8200"}, "VAULT_ADDR"),
        ({"VAULT_ADDR": ""}, "VAULT_ADDR is not set"),
        ({"VAULT_ADDR": "  "}, "VAULT_ADDR is not set"),
        ({"VAULT_ADDR": "http://[::1"}, "VAULT_ADDR"),
        ({"VAULT_ADDR": "http://vault:99999"}, "VAULT_ADDR"),
        ({"VAULT_SKIP_VERIFY": "maybe"}, "VAULT_SKIP_VERIFY"),
        ({"VAULT_CACERT": "/nonexistent/ca.pem"}, "VAULT_CACERT"),
        ({"VAULT_CLIENT_CERT": "/nonexistent/c.pem"}, "set together"),
        ({"VAULT_CLIENT_CERT": "/nonexistent/c", "VAULT_CLIENT_KEY": "/x"}, "VAULT_CLIENT_CERT"),
        ({"VAULT_AUTH_METHOD": "ldap"}, "VAULT_AUTH_METHOD"),
        ({"VAULT_CLIENT_TIMEOUT": "soon"}, "VAULT_CLIENT_TIMEOUT"),
    ],
)
def test_bad_settings_are_config_errors(environ: dict[str, str], match: str) -> None:
    environ = {"VAULT_ADDR": "https://vault.example.com:8200", **environ}
    environ = {name: value for name, value in environ.items() if value}
    with pytest.raises(ConfigError, match=match) as caught:
        VaultBackend(environ)
    assert caught.value.exit_code == 78


def test_settings_follow_the_vault_cli(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for path in (ca, cert, key):
        path.write_text("x")
    settings = VaultBackend({
        "VAULT_ADDR": "https://127.0.0.1:8200/", "VAULT_CACERT": str(ca), "VAULT_CAPATH": str(tmp_path), "VAULT_CLIENT_CERT": str(cert),
        "VAULT_CLIENT_KEY": str(key), "VAULT_CLIENT_TIMEOUT": "2m", "VAULT_NAMESPACE": "a/b",
        "VAULT_ROLE_ID": "r", "HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "other.example",
    }).settings
    assert settings.addr == "https://127.0.0.1:8200"
    assert settings.verify == str(ca)  # VAULT_CACERT wins over VAULT_CAPATH
    assert settings.cert == (str(cert), str(key))
    assert (settings.timeout, settings.namespace, settings.auth) == (120.0, "a/b", "approle")
    assert settings.proxies == {}  # never through a proxy to a loopback address
    remote = VaultBackend({"VAULT_ADDR": "https://vault.example.com", "VAULT_SKIP_VERIFY": "true",
                           "HTTPS_PROXY": "http://proxy:3128"}).settings
    assert (remote.verify, remote.proxies) == (False, {"https": "http://proxy:3128"})
    bypass = VaultBackend({"VAULT_ADDR": "https://vault.example.com", "NO_PROXY": ".example.com",
                           "HTTPS_PROXY": "http://proxy:3128"}).settings
    assert bypass.proxies == {}
    here = {"VAULT_ADDR": "https://vault.example.com"}
    assert VaultBackend({**here, "VAULT_K8S_ROLE": "app"}).settings.auth == "kubernetes"
    assert VaultBackend({**here, "VAULT_K8S_ROLE": "a", "VAULT_TOKEN": "t"}).settings.auth == "token"


# -- error replies and transport failures ---------------------------------------------------


EXPECTED = {
    400: NotFoundError, 401: AuthError, 403: AuthError, 404: NotFoundError,
    405: ConfigError, 412: StoreUnavailableError, 429: StoreUnavailableError,
    500: StoreUnavailableError, 501: StoreUnavailableError, 502: StoreUnavailableError,
    503: StoreUnavailableError,
}


@pytest.mark.parametrize("status", [*EXPECTED, 418, 504], ids=str)
def test_every_error_status_is_mapped_without_quoting_the_reply(status: int) -> None:
    value = canary("body")
    mapped = map_error(StatusError(status, (f"bad {value}",)), "http://127.0.0.1:8200")
    expected = EXPECTED.get(status, StoreUnavailableError)
    assert type(mapped) is expected
    assert mapped.retryable == (expected is StoreUnavailableError)
    assert_not_leaked(value, str(mapped), repr(mapped), mapped.hint or "")


def test_the_statuses_with_their_own_message_are_all_expected() -> None:
    assert set(STATUS_ERRORS) == set(EXPECTED)


def test_login_refusals_are_auth_errors() -> None:
    for status in (400, 403, 404):
        refused = map_error(StatusError(status), "http://a", action="log in with approle")
        assert type(refused) is AuthError
    busy = map_error(StatusError(503), "http://a", action="log in with approle")
    assert type(busy) is StoreUnavailableError


@pytest.mark.parametrize(
    ("exc", "expected", "words"),
    [
        (ConnectionRefusedError(111, "refused"), StoreUnavailableError, "cannot connect"),
        (ConnectionResetError(), StoreUnavailableError, "cannot connect"),
        (socket.gaierror(-2, "Name or service not known"), StoreUnavailableError,
         "cannot connect"),
        (TimeoutError("timed out"), StoreUnavailableError, "in time"),
        (http.client.RemoteDisconnected("closed"), StoreUnavailableError, "cannot connect"),
        (http.client.IncompleteRead(b"", 10), StoreUnavailableError, "failed"),
        (http.client.BadStatusLine("SSH-2.0"), StoreUnavailableError, "unexpected response"),
        (UnexpectedReply("not json"), StoreUnavailableError, "unexpected response"),
        (ssl.SSLError(1, "EOF occurred"), StoreUnavailableError, "cannot connect"),
        (ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]"), ConfigError,
         "VAULT_CACERT"),
    ],
)
def test_transport_exceptions_are_mapped(
    exc: Exception, expected: type[EnvwrapError], words: str
) -> None:
    mapped = map_error(exc, "https://vault.example.com")
    assert type(mapped) is expected
    assert words in f"{mapped} {mapped.hint}"
    assert "vault.example.com" in str(mapped) or expected is ConfigError


# -- what goes on the wire ------------------------------------------------------------------


def _outcome(backend: VaultBackend, locator: Locator) -> tuple[type, str | None]:
    """What a read gives: the value's version, or the envwrap error's class and message."""
    try:
        fetched = backend.read(locator)
    except EnvwrapError as err:
        return type(err), str(err)
    return Fetched, fetched.version


def test_reads_send_what_the_vault_cli_sends(
    openbao: OpenBao, vault: VaultBackend, wire: list[Sent]
) -> None:
    names = [unique("short") for _ in range(5)]
    values = [canary(f"s{i}") for i in range(5)]
    for name, value in zip(names, values, strict=True):
        openbao.kv2_put(name, {"v": value})
    outcomes = vault.read_many([loc(f"secret/{n}") for n in names])
    assert [select(o.data, "v") for o in outcomes if isinstance(o, Fetched)] == values
    by_path = {target.split("?")[0]: headers for _, target, headers in wire}
    assert len(wire) == 1 + 5  # one mount detection, then one GET per path
    for name in names:
        headers = by_path[f"/v1/secret/data/{name}"]
        assert headers["X-Vault-Token"] == openbao.token
        assert headers["X-Vault-Request"] == "true"
        assert "X-Vault-Namespace" not in headers


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", (NotFoundError, "no such secret")),
        ("missing version", (NotFoundError, "no version 7")),
        ("pinned", (Fetched, "2")),
        ("previous", (NotFoundError, "no version 1")),
        ("deleted version", (NotFoundError, "no version 1")),
        ("denied", (AuthError, "HTTP 403")),
        ("bad token", (AuthError, "HTTP 403")),
        ("kv1", (Fetched, None)),
        ("kv1 missing", (NotFoundError, "nothing at this path")),
        ("kv1 version", (NotFoundError, "?version= needs a KV version 2 mount")),
        ("mount itself", (NotFoundError, "")),
        ("no mount", (NotFoundError, "nothing at this path")),
    ],
)
def test_real_replies_are_read_and_mapped(
    openbao: OpenBao, kv1: str, case: str, expected: tuple[type, str | None]
) -> None:
    name, value = unique("parity"), canary()
    openbao.kv2_put(name, {"k": value})
    openbao.kv2_put(name, {"k": canary()})
    openbao.kv1_put(name, {"k": value}, mount=kv1)
    openbao.client.secrets.kv.v2.delete_secret_versions(path=name, versions=[1])
    token = {"denied": openbao.child_token(["default"]), "bad token": "not-a-token"}.get(case)
    locator = {
        "missing": loc(f"secret/{name}-missing"),
        "missing version": loc(f"secret/{name}", version="7"),
        "pinned": loc(f"secret/{name}", version="2"),
        "previous": loc(f"secret/data/{name}", version="-1"),
        "deleted version": loc(f"secret/{name}", version="1"),
        "denied": loc(f"secret/{name}"),
        "bad token": loc(f"secret/{name}"),
        "kv1": loc(f"{kv1}/{name}"),
        "kv1 missing": loc(f"{kv1}/{name}-missing"),
        "kv1 version": loc(f"{kv1}/{name}", version="1"),
        "mount itself": loc(kv1),
        "no mount": loc(f"nosuchmount-{name}/x"),
    }[case]
    backend = backend_for(openbao, **({"VAULT_TOKEN": token} if token else {}))
    try:
        kind, text = _outcome(backend, locator)
    finally:
        backend.close()
    assert kind is expected[0]
    if kind is Fetched:
        assert text == expected[1]
    else:
        assert expected[1] in str(text)
        assert_not_leaked(value, str(text))


def _cut(handler: Any) -> None:
    """The connection drops without a reply."""
    handler.close_connection = True


_OK = kv2_secret({"k": "fake-value"}, version=3)


def _ok_then_close(handler: Any) -> None:
    """Kept alive as far as the client knows; closed once the client is idle."""
    _OK(handler)
    handler.close_connection = True


#: a KV v2 secret ``secret/NAME`` answering as its name says
REPLIES: dict[str, Reply] = {
    "ok": _OK,
    "ok-then-close": _ok_then_close,
    "redirect": redirect("/v1/secret/data/ok"),
    "redirect-twice": redirect("/v1/secret/data/redirect"),
    "not-json": raw(200, b"<html>a login page</html>", "text/html"),
    "no-content": raw(204, b""),
    "cut": _cut,
    "slow": hang,
    "plain-error": raw(500, b"<html>proxy error</html>", "text/html"),
    **{f"status-{code}": reply(code, {"errors": ["boom"]})
       for code in (400, 401, 403, 404, 405, 412, 429, 500, 501, 502, 503, 504)},
}


#: where the fake server answers as a proxy, for a name only it knows
PROXIED = "http://vault.invalid"


@pytest.fixture(scope="module")
def kv2_store() -> Iterator[FakeStore]:
    """One fake Vault for the module (a store's shutdown takes half a second)."""
    store = FakeStore()
    vault_kv2(store, REPLIES)
    vault_kv2(store, {"ok": _OK}, prefix=f"{PROXIED}:{store.port}")  # a proxy gets the URL
    yield store
    store.close()


@pytest.mark.parametrize("name", [n for n in REPLIES if n != "ok-then-close"])
def test_every_kind_of_reply_is_mapped(kv2_store: FakeStore, name: str) -> None:
    environ = {"VAULT_ADDR": kv2_store.url, "VAULT_TOKEN": "t", "VAULT_CLIENT_TIMEOUT": "300ms"}
    backend = VaultBackend(environ)
    try:
        got = _outcome(backend, loc(f"secret/{name}"))
    finally:
        backend.close()
    if name in {"ok", "redirect"}:
        assert got == (Fetched, "3")
    elif name == "redirect-twice":
        assert got[0] is ReplyRefusedError and "more than once" in str(got[1])
    elif name.startswith("status-"):
        code = int(name[len("status-"):])
        assert got[0] is EXPECTED.get(code, StoreUnavailableError)
        # a 404 says what is missing in its own words
        assert f"HTTP {code}" in str(got[1]) or code in (404, 504)
    else:
        assert got[0] is StoreUnavailableError
        assert "boom" not in str(got[1]) and "html" not in str(got[1])


def test_a_kept_alive_connection_the_server_closed_is_not_a_failure(
    kv2_store: FakeStore,
) -> None:
    backend = VaultBackend({"VAULT_ADDR": kv2_store.url, "VAULT_TOKEN": "t"})
    try:
        for _ in range(3):
            assert _outcome(backend, loc("secret/ok-then-close")) == (Fetched, "3")
            time.sleep(0.05)  # the server closes the idle connection meanwhile
    finally:
        backend.close()


def test_reads_go_through_the_proxy_with_its_credentials(kv2_store: FakeStore) -> None:
    origin = f"{PROXIED}:{kv2_store.port}"
    proxy = f"http://user:pw@127.0.0.1:{kv2_store.port}"  # the fake answers as the proxy
    backend = VaultBackend({"VAULT_ADDR": origin, "VAULT_TOKEN": "t", "HTTP_PROXY": proxy})
    before = len(kv2_store.seen)
    try:
        assert _outcome(backend, loc("secret/ok"))[0] is Fetched
    finally:
        backend.close()
    seen = kv2_store.seen[before:]
    assert seen[-1].path == f"{origin}/v1/secret/data/ok"  # absolute form
    assert seen[-1].headers["Proxy-Authorization"] == "Basic dXNlcjpwdw=="
    assert seen[-1].headers["X-Vault-Token"] == "t"
    assert seen[0].headers["Proxy-Authorization"] == "Basic dXNlcjpwdw=="  # the detection too


def test_a_proxy_that_is_not_http_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not an http:// proxy"):
        VaultBackend({"VAULT_ADDR": "https://vault.example.com", "VAULT_TOKEN": "t",
                      "HTTPS_PROXY": "socks5://proxy.example.com:1080"})


def test_a_key_error_inside_a_read_is_a_bug_not_a_store_error(openbao: OpenBao) -> None:
    class Broken(VaultBackend):
        def _read_plain(self, path: str) -> Fetched:
            self.connection.get("auth/token/lookup-self")  # a real request, inside the mapping
            raise KeyError("data")

    backend = Broken(openbao.env())
    try:
        with pytest.raises(KeyError):
            backend.read(loc("sys/nothing-here"))
        with pytest.raises(KeyError):
            backend.read_many([loc("sys/a"), loc("sys/b")])
    finally:
        backend.close()


def test_map_error_refuses_what_is_not_a_transport_exception() -> None:
    for bug in (KeyError("data"), TypeError("x"), ValueError("x")):
        with pytest.raises(TypeError):
            map_error(bug, "https://vault.example.com")
