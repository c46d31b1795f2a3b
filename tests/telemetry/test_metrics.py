"""Unit tests of the event stream, the metrics derived from it, --restart-limit and
lease bookkeeping (pure logic, injectable clocks; one real-time test)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from envwrap.backends import Fetched, Lease
from envwrap.config import parse_args
from envwrap.environment import Composed
from envwrap.errors import ConfigError, StoreUnavailableError
from envwrap.refs import parse_reference
from envwrap.restart_limit import RestartWindow
from envwrap.revoke import LeaseRevoker
from envwrap.telemetry import audit, events
from envwrap.telemetry.metrics import Metrics
from envwrap.telemetry.server import parse_address
from envwrap.values import parse_rate
from testsupport.clock import Clock
from testsupport.helpers import canary, wait_until


@pytest.fixture
def sink() -> Iterator[Metrics]:
    metrics = Metrics(clock=Clock())
    events.add_sink(metrics)
    yield metrics
    events.remove_sink(metrics)


def exposition(metrics: Metrics) -> str:
    from prometheus_client.exposition import generate_latest

    class Registry:
        def collect(self) -> object:
            return metrics.collect()

    return generate_latest(Registry()).decode()  # type: ignore[arg-type]


def access(variable: str, version: str, path: str = "secret/db") -> None:
    audit.record("access", variable=variable, store="vault", path=path, key="password",
                 version=version, outcome="ok")


def running(*uses: tuple[str, str, str]) -> None:
    """What the rotation policy publishes: (variable, version, path) of each use."""
    audit.record("running", uses=[[variable, "vault", path, "password", version]
                                  for variable, version, path in uses])


# -- the event stream ----------------------------------------------------------------------


def test_every_sink_gets_every_event_and_a_failing_sink_is_not_fatal() -> None:
    got: list[tuple[str, dict[str, object]]] = []

    class Recorder:
        def handle(self, event: str, fields: object) -> None:
            got.append((event, dict(fields)))  # type: ignore[call-overload]

    class Broken:
        def handle(self, event: str, fields: object) -> None:
            raise RuntimeError("boom")

    recorder, broken = Recorder(), Broken()
    events.add_sink(broken)
    events.add_sink(recorder)
    try:
        audit.record("rotation", outcome="applied", detail="x")
    finally:
        events.remove_sink(broken)
        events.remove_sink(recorder)
    assert got == [("rotation", {"outcome": "applied", "detail": "x"})]
    audit.record("rotation", outcome="applied")  # no sink left: nothing happens
    assert len(got) == 1


def test_audit_log_sink_skips_checks_and_redacts(tmp_path: object) -> None:
    from envwrap.secret import known_values

    value = canary()
    known_values.add(value)
    read, write = os.pipe()
    log = audit.AuditLog(write)
    log.handle("check", {"store": "vault", "path": "p", "outcome": "ok"})
    log.handle("rotation", {"outcome": "failed", "detail": f"bad {value}"})
    os.close(write)
    text = os.read(read, 65536).decode()
    os.close(read)
    assert '"event": "rotation"' in text and '"check"' not in text
    assert value not in text


# -- metrics derived from events -------------------------------------------------------------


def test_secret_info_follows_the_running_generation(sink: Metrics) -> None:
    access("DB_PASSWORD", "1")
    audit.record("resolved", outcome="ok")
    assert sink.not_ready() == "the program is not running"
    running(("DB_PASSWORD", "1", "secret/db"))
    audit.record("start", pid=10, reason="initial")
    assert sink.not_ready() == "the program is not ready yet"
    audit.record("ready", pid=10)
    assert sink.not_ready() is None
    text = exposition(sink)
    assert ('envwrap_secret_info{key="password",path="secret/db",store="vault",'
            'variable="DB_PASSWORD",version="1"} 1.0') in text
    # a new version is read: the running generation still uses version 1
    access("DB_PASSWORD", "2")
    assert 'version="1"' in exposition(sink) and 'version="2"' not in exposition(sink)
    audit.record("rotation", outcome="applied")
    audit.record("child_exit", pid=10, code=143)
    assert sink.not_ready() == "the program is not running"
    audit.record("start", pid=11, reason="rotation")
    audit.record("ready", pid=11)
    assert 'version="1"' in exposition(sink)  # until the policy says what runs
    running(("DB_PASSWORD", "2", "secret/db"))
    text = exposition(sink)
    assert 'version="2"' in text and 'version="1"' not in text
    assert 'envwrap_rotations_total{outcome="applied"} 1.0' in text
    assert 'envwrap_child_starts_total{reason="rotation"} 1.0' in text
    assert "envwrap_child_up 1.0" in text and "envwrap_child_ready 1.0" in text
    # a late exit of the old generation changes nothing
    audit.record("child_exit", pid=10, code=0)
    assert sink.child_up


def test_a_variable_with_two_references_has_two_info_series(sink: Metrics) -> None:
    running(("DATABASE_URL", "4", "secret/db-user"), ("DATABASE_URL", "7", "secret/db-password"))
    audit.record("start", pid=1, reason="initial")
    text = exposition(sink)
    assert 'path="secret/db-user",store="vault",variable="DATABASE_URL",version="4"' in text
    assert 'path="secret/db-password",store="vault",variable="DATABASE_URL",version="7"' in text


def test_a_changed_env_file_lists_every_use_afresh(sink: Metrics) -> None:
    running(("A", "1", "secret/a"), ("B", "1", "secret/b"))
    audit.record("start", pid=1, reason="initial")
    running(("A", "1", "secret/b"))  # B gone, A moved
    assert sink.running == {("A", "vault", "secret/b", "password"): "1"}


def test_failed_and_rolled_back_rotations(sink: Metrics) -> None:
    access("A", "1")
    audit.record("resolved", outcome="ok")
    running(("A", "1", "secret/db"))
    audit.record("start", pid=1, reason="initial")
    audit.record("ready", pid=1)
    access("A", "2")
    audit.record("rotation", outcome="failed", detail="value too large for A")
    assert sink.not_ready() == "the last rotation failed: value too large for A"
    assert sink.running == {("A", "vault", "secret/db", "password"): "1"}
    access("A", "3")
    audit.record("rotation", outcome="applied")
    running(("A", "3", "secret/db"))
    assert sink.not_ready() is None
    audit.record("start", pid=2, reason="rotation")
    audit.record("rotation", outcome="rolled_back")
    audit.record("start", pid=3, reason="rollback")
    audit.record("ready", pid=3)
    # what the rolled-back-to generation was started with
    assert sink.running == {("A", "vault", "secret/db", "password"): "3"}
    text = exposition(sink)
    assert 'envwrap_rotations_total{outcome="rolled_back"} 1.0' in text
    assert 'envwrap_child_starts_total{reason="rollback"} 1.0' in text


def test_store_health_and_leases(sink: Metrics) -> None:
    clock = sink.clock
    assert isinstance(clock, Clock)
    audit.record("check", store="vault", path="secret/db", outcome="ok")
    clock.now = 1010.0
    audit.record("check", store="vault", path="secret/db", outcome="unavailable")
    audit.record("check", store="vault", path="secret/db", outcome="unavailable")
    audit.record("check", store="vault", path="secret/other", outcome="config")
    audit.record("lease", store="vault", path="rabbitmq/creds/app", outcome="obtained",
                 expires=2000.5)
    text = exposition(sink)
    assert 'envwrap_store_up{store="vault"} 0.0' in text
    assert 'envwrap_store_errors_total{kind="unavailable",store="vault"} 2.0' in text
    assert 'envwrap_store_errors_total{kind="other",store="vault"} 1.0' in text
    assert ('envwrap_secret_last_success_timestamp_seconds{path="secret/db",store="vault"} '
            "1000.0") in text
    assert 'envwrap_lease_expiry_timestamp_seconds{path="rabbitmq/creds/app"} 2000.5' in text
    audit.record("check", store="vault", path="secret/db", outcome="ok")
    audit.record("lease", store="vault", path="rabbitmq/creds/app", outcome="revoked")
    text = exposition(sink)
    assert 'envwrap_store_up{store="vault"} 1.0' in text
    assert "envwrap_lease_expiry_timestamp_seconds{" not in text


def test_hold_and_cache_and_sidecar_readiness() -> None:
    sidecar = Metrics(needs_child=False)
    sidecar.handle("access", {"variable": "A", "store": "file", "path": "/p", "outcome": "ok"})
    assert sidecar.not_ready() == "resolving the secrets"
    sidecar.handle("resolved", {"outcome": "ok"})
    # resolved, the files not written yet: a startup probe must not let the app start
    assert sidecar.not_ready() == "writing the files"
    sidecar.handle("running", {"uses": [["A", "file", "/p", "", ""]]})
    assert sidecar.not_ready() is None and sidecar.running == {("A", "file", "/p", ""): ""}
    sidecar.handle("hold", {"outcome": "held", "detail": "3 restarts in 600s reached"})
    assert sidecar.not_ready() == (
        "a restart is held by --restart-limit: 3 restarts in 600s reached")
    sidecar.handle("hold", {"outcome": "released"})
    sidecar.handle("cache", {"outcome": "served"})
    assert sidecar.not_ready() is None
    assert "envwrap_serving_cached 1.0" in exposition(sidecar)


def test_every_metric_of_the_design_table_is_exposed(sink: Metrics) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    access("A", "1")
    audit.record("check", store="vault", path="secret/db", outcome="denied")
    audit.record("lease", store="vault", path="x", outcome="obtained", expires=5.0)
    audit.record("start", pid=1, reason="initial")
    names = {family.name for family in text_string_to_metric_families(exposition(sink))}
    assert names == {
        "envwrap_child_up", "envwrap_child_ready", "envwrap_child_starts",
        "envwrap_rotations", "envwrap_secret_info",
        "envwrap_secret_last_success_timestamp_seconds", "envwrap_store_up",
        "envwrap_store_errors", "envwrap_lease_expiry_timestamp_seconds",
        "envwrap_serving_cached",
    }


# -- options ---------------------------------------------------------------------------------


def test_options_parse_and_imply_supervision() -> None:
    assert parse_rate("3/10m") == (3, 600.0)
    for bad in ("3", "0/1m", "x/1m", "3/0s", "3/soon"):
        with pytest.raises(ConfigError):
            parse_rate(bad, "--restart-limit")
    settings = parse_args(["--metrics", ":9102", "--restart-limit", "2/30s", "--", "x"], {})
    assert settings.supervise and settings.restart_limit == (2, 30.0)
    assert parse_args(["--revoke-on-exit", "--", "x"], {}).supervise
    assert parse_args(["--", "x"], {"ENVWRAP_METRICS": "127.0.0.1:9"}).metrics == "127.0.0.1:9"
    assert parse_address(":9102") == ("0.0.0.0", 9102)
    assert parse_address("[::1]:9102") == ("::1", 9102)
    with pytest.raises(ConfigError, match="--metrics"):
        parse_address("localhost")


# -- --restart-limit ---------------------------------------------------------------------------


def test_restart_window_slides() -> None:
    clock = Clock()
    window = RestartWindow(2, 60.0, clock)
    assert window.delay() == 0
    window.record()
    clock.now += 10
    window.record()
    assert window.delay() == 50.0
    clock.now += 50
    assert window.delay() == 0  # the first restart left the window
    window.record()
    assert window.delay() == 10.0
    clock.now += 10
    assert window.delay() == 0
    with pytest.raises(ValueError):
        RestartWindow(0, 1.0)


class Restarts:
    """The supervisor, as the policy sees it: records the restarts it is asked for."""

    def __init__(self) -> None:
        self.done: list[dict[str, str]] = []

    def replace(self, environment: dict[str, str], done: object = None) -> None:
        self.done.append(environment)

    def handoff(self, environment: dict[str, str], done: object = None) -> None:
        raise AssertionError("not in this test")

    def send(self, signum: int) -> None:
        raise AssertionError("not in this test")

    def request_exit(self, code: int) -> None:
        raise AssertionError("not in this test")


@pytest.mark.slow
def test_held_changes_coalesce_and_are_applied_when_the_window_allows() -> None:
    from envwrap.config import Settings
    from envwrap.environment import Composed
    from envwrap.rotation import RotationPolicy

    settings = Settings()
    settings.argv = ["server"]
    settings.on_change = "restart"
    settings.wait = (0.0, 0.0)  # apply each change as it comes: the window is what is tested
    restarts = Restarts()
    policy = RotationPolicy(settings, {"V": "0"}, restarts, gate=RestartWindow(1, 0.6))

    def change(value: str) -> None:
        policy(Composed({"V": value}, ["V"], [value]), set())

    started = time.monotonic()
    change("1")
    for value in ("2", "3", "4"):
        change(value)
    assert policy.held and restarts.done == [{"V": "1"}]
    wait_until(lambda: len(restarts.done) == 2, timeout=10)
    assert time.monotonic() - started >= 0.55
    assert restarts.done[1] == {"V": "4"} and not policy.held
    # a change undone while held is not applied at all
    change("5")
    assert policy.held
    change("4")
    assert not policy.held
    time.sleep(0.8)
    assert len(restarts.done) == 2
    policy.close()


# -- --revoke-on-exit bookkeeping ---------------------------------------------------------------


class RevokingBackend:
    def __init__(self, fail: set[str]) -> None:
        self.revoked: list[str] = []
        self.fail = fail
        self.token_revoked = False

    def revoke(self, lease: Lease) -> bool:
        if lease.lease_id in self.fail:
            raise StoreUnavailableError("cannot connect")
        self.revoked.append(lease.lease_id)
        return True

    def release(self) -> bool:
        self.token_revoked = True
        return True


class Registry:
    def __init__(self, backend: RevokingBackend) -> None:
        self.backend = backend

    def get(self, scheme: str) -> RevokingBackend:
        return self.backend

    def backends(self) -> dict[str, RevokingBackend]:
        return {"vault": self.backend}


def test_revoker_revokes_what_a_stopped_generation_alone_used() -> None:
    db_ref = parse_reference("vault://database/creds/app")
    mq_ref = parse_reference("vault://rabbitmq/creds/app")
    assert db_ref is not None and mq_ref is not None
    db, mq = db_ref.locator, mq_ref.locator

    def fetched(db_lease: str, mq_lease: str) -> dict[object, Fetched]:
        return {db: Fetched({}, lease=Lease(db_lease, 60, True)),
                mq: Fetched({}, lease=Lease(mq_lease, 60, True))}

    backend = RevokingBackend(fail={"mq-2"})
    revoker = LeaseRevoker(Registry(backend), fetched("db-1", "mq-1"))  # type: ignore[arg-type]
    first, second = fetched("db-1", "mq-1"), fetched("db-1", "mq-2")
    revoker.generation_changed(Composed({}, [], [], second),  # type: ignore[arg-type]
                               Composed({}, [], [], first))  # type: ignore[arg-type]
    assert backend.revoked == ["mq-1"]
    revoker.close(fetched("db-3", "mq-2"))  # type: ignore[arg-type]
    assert sorted(backend.revoked) == ["db-1", "db-3", "mq-1"]  # mq-2 failed: logged only
    assert backend.token_revoked


def test_revoker_waits_for_the_old_generation_of_a_handoff_to_exit() -> None:
    db_ref = parse_reference("vault://database/creds/app")
    assert db_ref is not None
    db = db_ref.locator

    def fetched(lease: str) -> dict[object, Fetched]:
        return {db: Fetched({}, lease=Lease(lease, 60, True))}

    backend = RevokingBackend(fail=set())
    revoker = LeaseRevoker(Registry(backend), fetched("db-1"))  # type: ignore[arg-type]
    revoker.handle("start", {"pid": 10, "reason": "initial"})
    revoker.handle("start", {"pid": 11, "reason": "rotation"})
    # the new generation is ready, the old one was asked to stop and still answers
    revoker.generation_changed(Composed({}, [], [], fetched("db-2")),  # type: ignore[arg-type]
                               Composed({}, [], [], fetched("db-1")))  # type: ignore[arg-type]
    revoker.handle("lease", {"outcome": "renewed"})
    assert backend.revoked == []
    revoker.handle("child_exit", {"pid": 10, "code": 0})
    wait_until(lambda: backend.revoked == ["db-1"], timeout=5)
    revoker.close()
    assert sorted(backend.revoked) == ["db-1", "db-2"]


# -- the HTTP responder ------------------------------------------------------------------------


def test_http_responder_answers_get_head_and_refuses_the_rest() -> None:
    import socket as socket_module

    from envwrap.telemetry.server import MetricsServer

    metrics = Metrics()
    server = MetricsServer("127.0.0.1:0", metrics)
    server.start()
    host, port = server.server.server_address[:2]

    def ask(request: bytes) -> bytes:
        with socket_module.create_connection((str(host), int(port)), timeout=5) as conn:
            conn.sendall(request)
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    try:
        answer = ask(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert answer.endswith(b'{"status": "fail", "reason": "resolving the secrets"}\n')
        metrics.handle("resolved", {})
        metrics.handle("start", {"pid": 5, "reason": "initial"})
        metrics.handle("ready", {"pid": 5})
        assert ask(b"GET /readyz?verbose=1 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        head = ask(b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        body = ask(b"GET /metrics HTTP/1.1\r\n\r\n").partition(b"\r\n\r\n")[2]
        assert b"envwrap_child_ready 1.0" in body
        metrics.handle("child_exit", {"pid": 5, "code": 0})  # the cached body is re-rendered
        body = ask(b"GET /metrics HTTP/1.1\r\n\r\n").partition(b"\r\n\r\n")[2]
        assert b"envwrap_child_ready 0.0" in body
        metrics.health["watcher"] = lambda: False
        assert b"the watcher is not running" in ask(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert ask(b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
        assert ask(b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        assert ask(b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    finally:
        server.close()
