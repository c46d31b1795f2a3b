"""``--metrics``, ``--restart-limit`` and ``--revoke-on-exit`` end to end: the installed
envwrap as a process, real OpenBao, real children, real sockets.

Every test scrapes every endpoint and reads the audit log, and checks that no
secret value appears in any of them (nor in envwrap's stderr).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.fixtures_vault import FakeServer, OpenBao, free_port
from testsupport.helpers import (
    LineCollector,
    assert_not_leaked,
    canary,
    fp,
    run_envwrap,
    wait_until,
)
from testsupport.kube import write_volume
from testsupport.proxy import TcpProxy
from testsupport.rotation import VAR, Wrapped, sh_child, unique_path, vault_env

pytestmark = pytest.mark.slow


class SidecarWrapped(Wrapped):
    """``envwrap sidecar ARGS``: Wrapped puts its options first; the command goes before."""

    subcommand = ("sidecar",)


class Endpoint:
    """``http://127.0.0.1:PORT``: GET a path, parse ``/metrics``."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.bodies: list[str] = []  # every answer, for the canary checks

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode()
        self.bodies.append(body)
        return status, body

    def up(self) -> bool:
        with contextlib.suppress(OSError):
            self.get("/healthz")
            return True
        return False

    def metrics(self) -> dict[str, float]:
        """``name{labels}`` -> value, as the text format writes them."""
        status, body = self.get("/metrics")
        assert status == 200
        samples = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def sample(self, pattern: str) -> dict[str, float]:
        return {k: v for k, v in self.metrics().items() if re.search(pattern, k)}

    def assert_clean(self, *values: str) -> None:
        for path in ("/metrics", "/healthz", "/readyz"):
            self.get(path)
        for value in values:
            assert_not_leaked(value, *self.bodies)


class Run:
    """One envwrap with ``--metrics`` and ``--audit-log``; stopped at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.audit = tmp_path / "audit" / "audit.log"  # not next to any watched file
        self.audit.parent.mkdir(exist_ok=True)
        self.port = free_port()
        self.endpoint = Endpoint(self.port)
        self.wrapped: Wrapped | None = None

    def start(self, env: Mapping[str, str], args: list[str], child: list[str] | None,
              *, wait_up: bool = True) -> Wrapped:
        tail = ["--", *child] if child is not None else []
        self.wrapped = (Wrapped if child is not None else SidecarWrapped)(
            [*args, "--metrics", f"127.0.0.1:{self.port}", "--audit-log", str(self.audit),
             *tail], env, self.tmp_path)
        if wait_up:
            wait_until(self.endpoint.up, timeout=20)
        return self.wrapped

    def audit_records(self) -> list[dict[str, object]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def assert_clean(self, *values: str) -> None:
        self.endpoint.assert_clean(*values)
        text = self.audit.read_text() if self.audit.exists() else ""
        assert self.wrapped is not None
        self.wrapped.assert_clean(*values)
        for value in values:
            assert_not_leaked(value, text)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    one = Run(tmp_path)
    yield one
    if one.wrapped is not None:
        one.wrapped.stop()


WATCH = ["--watch", "--interval", "500ms"]


def test_rotation_moves_the_version_label_and_counts_applied(
    openbao: OpenBao, base_env: dict[str, str], run: Run
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("new")
    v1 = openbao.kv2_put(path, {"value": old})
    wrapped = run.start(vault_env(base_env, openbao, path), WATCH, sh_child())
    wrapped.wait_start(fp(old))
    info = rf'^envwrap_secret_info\{{key="value",path="secret/{path}",store="vault",variable="{VAR}",version="(\d+)"\}}$'
    wait_until(lambda: run.endpoint.get("/readyz")[0] == 200, timeout=10)
    assert run.endpoint.sample(info) == {
        f'envwrap_secret_info{{key="value",path="secret/{path}",store="vault",'
        f'variable="{VAR}",version="{v1}"}}': 1.0}
    assert run.endpoint.metrics()['envwrap_rotations_total{outcome="applied"}'] == 0
    assert run.endpoint.metrics()['envwrap_child_starts_total{reason="initial"}'] == 1

    v2 = openbao.kv2_put(path, {"value": new})
    wrapped.wait_start(fp(new))

    def moved() -> bool:
        samples = run.endpoint.sample(info)
        return len(samples) == 1 and f'version="{v2}"' in next(iter(samples))

    wait_until(moved, timeout=10)
    metrics = run.endpoint.metrics()
    assert metrics['envwrap_rotations_total{outcome="applied"}'] == 1
    assert metrics['envwrap_child_starts_total{reason="rotation"}'] == 1
    assert metrics["envwrap_child_up"] == 1 and metrics["envwrap_child_ready"] == 1
    assert metrics['envwrap_store_up{store="vault"}'] == 1
    assert run.endpoint.get("/readyz")[0] == 200
    events = [r["event"] for r in run.audit_records()]
    assert "check" not in events
    assert {"start", "ready", "child_exit", "rotation", "restart"} <= set(events)
    assert any(r["event"] == "rotation" and r["outcome"] == "applied"
               for r in run.audit_records())
    run.assert_clean(old, new)


class Proxied:
    """A fresh KV v2 secret (a canary value) read through a TcpProxy to OpenBao."""

    def __init__(self, openbao: OpenBao, base_env: dict[str, str]) -> None:
        path = unique_path()
        self.value = canary()
        openbao.kv2_put(path, {"value": self.value})
        self.proxy = TcpProxy(int(openbao.addr.rsplit(":", 1)[1]))
        self.env = vault_env(base_env, openbao, path, VAULT_ADDR=self.proxy.url)


@pytest.fixture
def proxied(openbao: OpenBao, base_env: dict[str, str]) -> Iterator[Proxied]:
    one = Proxied(openbao, base_env)
    yield one
    one.proxy.close()


def test_store_cut_shows_store_down_while_the_program_keeps_running(
    proxied: Proxied, run: Run
) -> None:
    value, proxy = proxied.value, proxied.proxy
    wrapped = run.start(proxied.env, WATCH, sh_child())
    pid = wrapped.wait_start(fp(value))
    wait_until(lambda: run.endpoint.metrics().get('envwrap_store_up{store="vault"}') == 1,
               timeout=10)
    proxy.cut()
    errors = 'envwrap_store_errors_total{kind="unavailable",store="vault"}'
    wait_until(lambda: run.endpoint.metrics().get(errors, 0) >= 2, timeout=20)
    metrics = run.endpoint.metrics()
    assert metrics['envwrap_store_up{store="vault"}'] == 0
    assert metrics["envwrap_child_up"] == 1
    assert wrapped.starts() == [(pid, fp(value))]
    assert wrapped.process.poll() is None
    # the program works with its values: still ready, and envwrap is healthy
    assert run.endpoint.get("/readyz")[0] == 200
    assert run.endpoint.get("/healthz")[0] == 200
    proxy.restore()
    wait_until(lambda: run.endpoint.metrics().get('envwrap_store_up{store="vault"}') == 1,
               timeout=20)
    assert wrapped.starts() == [(pid, fp(value))]
    run.assert_clean(value)


def test_readyz_is_503_until_the_program_is_started(proxied: Proxied, run: Run) -> None:
    value, proxy = proxied.value, proxied.proxy
    proxy.cut()  # the store is down at start: envwrap retries, the program waits
    wrapped = run.start(proxied.env, [*WATCH, "--start-timeout", "60s"], sh_child())
    status, body = run.endpoint.get("/readyz")
    assert status == 503
    assert json.loads(body) == {"status": "fail", "reason": "resolving the secrets"}
    assert "\n" not in body.strip()
    metrics = run.endpoint.metrics()
    assert metrics["envwrap_child_up"] == 0
    wait_until(lambda: run.endpoint.metrics().get('envwrap_store_up{store="vault"}') == 0,
               timeout=10)
    assert wrapped.starts() == []
    proxy.restore()
    wrapped.wait_start(fp(value), timeout=30)
    wait_until(lambda: run.endpoint.get("/readyz")[0] == 200, timeout=10)
    run.assert_clean(value)


def test_sidecar_serves_metrics(tmp_path: Path, base_env: dict[str, str], run: Run) -> None:
    volume = tmp_path / "volume"
    old, new = canary("old"), canary("new")
    write_volume(volume, {"password": old})
    out = tmp_path / "out" / "secrets.json"
    out.parent.mkdir()
    env = {**base_env, VAR: f"ref+file://{volume}/password"}
    wrapped = run.start(env, ["--render", str(out), "--interval", "500ms"], None)
    wait_until(lambda: run.endpoint.get("/readyz")[0] == 200, timeout=10)
    info = (f'envwrap_secret_info{{key="",path="{volume}/password",store="file",'
            f'variable="{VAR}",version=""}}')
    assert run.endpoint.metrics()[info] == 1
    write_volume(volume, {"password": new})
    wait_until(lambda: json.loads(out.read_text())[VAR] == new, timeout=10)
    wait_until(lambda: run.endpoint.metrics().get('envwrap_rotations_total{outcome="applied"}')
               == 1, timeout=10)
    assert run.endpoint.get("/healthz")[0] == 200
    assert wrapped.process.poll() is None
    run.assert_clean(old, new)


#: how each rotation mode starts the next generation; handoff waits for --ready
MODES = {"restart": [], "handoff": ["--on-change", "handoff", "--ready", "200ms"]}


@pytest.mark.parametrize("mode", list(MODES))
def test_burst_under_restart_limit_restarts_at_most_n_times_and_ends_on_the_last_value(
    tmp_path: Path, base_env: dict[str, str], run: Run, mode: str
) -> None:
    volume = tmp_path / "volume"
    values = [canary(f"v{i}") for i in range(6)]
    write_volume(volume, {"password": values[0]})
    env = {**base_env, VAR: f"ref+file://{volume}/password"}
    window = 4.0
    wrapped = run.start(env, [*WATCH, *MODES[mode], "--restart-limit", f"2/{window:g}s"],
                        sh_child())
    wrapped.wait_start(fp(values[0]))
    held_seen = False
    for value in values[1:]:
        write_volume(volume, {"password": value})
        time.sleep(0.3)  # distinct changes (the file debounce is 50 ms), not an oracle
        status, body = run.endpoint.get("/readyz")
        if status == 503 and "--restart-limit" in body:
            held_seen = True
    wrapped.wait_start(fp(values[-1]), timeout=window * 3)
    time.sleep(1.0)  # nothing more happens after the last value is applied
    starts = wrapped.starts()
    assert starts[-1][1] == fp(values[-1])
    assert 2 <= len(starts) - 1 < len(values) - 1  # coalesced: fewer restarts than changes
    times = [wrapped.start_time(f) for _, f in starts[1:]]
    assert all(t is not None for t in times)
    # sliding window: any 3 consecutive restarts span at least the window
    for first, third in zip(times, times[2:], strict=False):
        assert third - first >= window - 0.3  # type: ignore[operator]
    assert held_seen
    assert "restart held by --restart-limit" in wrapped.stderr()
    wait_until(lambda: run.endpoint.get("/readyz")[0] == 200, timeout=10)
    holds = [r["outcome"] for r in run.audit_records() if r["event"] == "hold"]
    assert "held" in holds and "released" in holds
    run.assert_clean(*values)


def _new_users(server: FakeServer, before: int, method: str) -> set[str]:
    return {path.rsplit("/", 1)[1] for m, path in server.requests[before:]
            if m == method and path.startswith("/api/users/")}


@pytest.mark.parametrize("revoke", [True, False], ids=["revoke-on-exit", "default"])
def test_revoke_on_exit_revokes_the_dynamic_secret(  # noqa: PLR0917 -- fixtures
    openbao: OpenBao, base_env: dict[str, str], run: Run,
    rabbitmq_role: str, fake_rabbitmq: FakeServer, revoke: bool,
) -> None:
    before = len(fake_rabbitmq.requests)
    leases_before = set(_leases(openbao, rabbitmq_role))
    env = {**base_env, **openbao.env(), VAR: f"vault://{rabbitmq_role}#password"}
    args = ["--revoke-on-exit"] if revoke else ["--init"]
    wrapped = run.start(env, args, sh_child())
    wait_until(lambda: wrapped.starts(), timeout=20)
    users = _new_users(fake_rabbitmq, before, "PUT")
    assert len(users) == 1
    lease = set(_leases(openbao, rabbitmq_role)) - leases_before
    assert len(lease) == 1
    metrics = run.endpoint.metrics()
    assert any(k.startswith("envwrap_lease_expiry_timestamp_seconds{") and v > time.time()
               for k, v in metrics.items())
    run.endpoint.assert_clean()
    os.kill(wrapped.process.pid, signal.SIGTERM)
    assert wrapped.process.wait(20) == 128 + signal.SIGTERM
    if revoke:
        wait_until(lambda: _new_users(fake_rabbitmq, before, "DELETE") == users, timeout=10)
        assert not lease & set(_leases(openbao, rabbitmq_role))
        assert any(r["event"] == "lease" and r["outcome"] == "revoked"
                   for r in run.audit_records())
    else:
        time.sleep(0.5)  # give a (wrong) revocation its chance to show
        assert _new_users(fake_rabbitmq, before, "DELETE") == set()
        assert lease <= set(_leases(openbao, rabbitmq_role))
        # clean up: the lease would otherwise outlive the test too
        openbao.client.sys.revoke_lease(next(iter(lease)))
    assert "Traceback" not in wrapped.stderr()


def _leases(openbao: OpenBao, role_path: str) -> list[str]:
    try:
        keys = openbao.client.sys.list_leases(prefix=role_path)["data"]["keys"]
    except Exception:  # no lease at all: 404
        return []
    return [f"{role_path}/{key}" for key in keys]


def test_a_metrics_address_in_use_is_exit_78_naming_it(base_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_envwrap(["--no-env-file", "--metrics", address, "--", "true"],
                             env=base_env)
    assert result.returncode == 78
    assert address in result.stderr and "Traceback" not in result.stderr
    bad = run_envwrap(["--no-env-file", "--metrics", "nowhere", "--", "true"], env=base_env)
    assert bad.returncode == 78 and "--metrics" in bad.stderr


@pytest.mark.parametrize("mode", list(MODES))
def test_after_a_restart_only_the_leases_of_the_stopped_generation_are_revoked(  # noqa: PLR0917
    openbao: OpenBao, base_env: dict[str, str], tmp_path: Path,
    rabbitmq_role: str, fake_rabbitmq: FakeServer, mode: str,
) -> None:
    other_role = f"{rabbitmq_role}-other"
    openbao.client.write_data(other_role.replace("/creds/", "/roles/"),
                              data={"vhosts": '{"/": {"read": ".*"}}'})
    dotenv = tmp_path / "app" / ".env"
    dotenv.parent.mkdir()
    dotenv.write_text(f"MQ_PASSWORD=vault://{rabbitmq_role}#password\n"
                      f"STABLE=vault://{other_role}#password\n")
    before = len(fake_rabbitmq.requests)
    endpoint = Endpoint(free_port())
    metrics_address = endpoint.base.removeprefix("http://")
    process = subprocess.Popen(
        [*envwrap_command(), "--env-file", str(dotenv), "--watch", "--interval", "500ms",
         "--revoke-on-exit", *MODES[mode], "--log-level", "info", "--metrics", metrics_address,
         "--",
         "/bin/sh", "-c", 'echo "started $$"; exec sleep 3600'],
        env={**base_env, **openbao.env()}, cwd=dotenv.parent, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    out, err = LineCollector(process.stdout), LineCollector(process.stderr)  # type: ignore[arg-type]
    try:
        out.wait_for("started", timeout=20)
        first_users = _new_users(fake_rabbitmq, before, "PUT")
        assert len(first_users) == 2
        # the .env now takes MQ_PASSWORD from STABLE's secret: the new generation
        # uses STABLE's lease only, so MQ_PASSWORD's old lease (and user) goes
        middle = len(fake_rabbitmq.requests)
        dotenv.write_text(f"MQ_PASSWORD=vault://{other_role}#password\n"
                          f"STABLE=vault://{other_role}#password\n")
        wait_until(lambda: out.text().count("started") == 2, timeout=20)
        new_user = _new_users(fake_rabbitmq, middle, "PUT")
        wait_until(lambda: _new_users(fake_rabbitmq, middle, "DELETE"), timeout=10)
        time.sleep(0.5)  # any further (wrong) revocation would show by now
        deleted = _new_users(fake_rabbitmq, middle, "DELETE")
        assert len(deleted) == 1 and deleted < first_users  # MQ_PASSWORD's old user only
        assert process.poll() is None
        # secret_info lists exactly what the new generation uses
        info = {k for k in endpoint.metrics() if k.startswith("envwrap_secret_info{")}
        assert {re.search(r'path="([^"]+)"', k).group(1) for k in info} == {other_role}  # type: ignore[union-attr]
        assert {re.search(r'variable="([^"]+)"', k).group(1) for k in info} == {  # type: ignore[union-attr]
            "MQ_PASSWORD", "STABLE"}
        os.kill(process.pid, signal.SIGTERM)
        process.wait(20)
        wait_until(lambda: _new_users(fake_rabbitmq, before, "DELETE")
                   == first_users | new_user, timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert "Traceback" not in err.join()


def test_every_thread_blocks_the_signals_the_supervisor_takes(
    tmp_path: Path, base_env: dict[str, str], run: Run
) -> None:
    """The metrics thread starts before the supervisor: it must not take a SIGTERM."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "pw").write_text(canary())
    env = {**base_env, VAR: f"ref+file://{tmp_path}/s/pw"}
    wrapped = run.start(env, WATCH, sh_child())
    wait_until(lambda: wrapped.starts(), timeout=20)
    run.endpoint.get("/metrics")
    tasks = list(Path(f"/proc/{wrapped.process.pid}/task").iterdir())
    assert len(tasks) >= 3  # main, watcher, metrics (at least)
    for task in tasks:
        if task.name == str(wrapped.process.pid):
            continue  # the main thread: in sigwaitinfo, the kernel shows them unblocked
        status = (task / "status").read_text()
        blocked = int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
        name = (task / "comm").read_text().strip()
        assert blocked & (1 << (signal.SIGTERM - 1)), f"thread {name} takes SIGTERM"
    os.kill(wrapped.process.pid, signal.SIGTERM)
    assert wrapped.process.wait(20) == 128 + signal.SIGTERM  # forwarded to the child


def test_a_watched_dynamic_secret_is_renewed_not_re_read_every_poll(
    openbao: OpenBao, base_env: dict[str, str], run: Run,
    rabbitmq_role: str, fake_rabbitmq: FakeServer,
) -> None:
    before = len(fake_rabbitmq.requests)
    env = {**base_env, **openbao.env(), VAR: f"vault://{rabbitmq_role}#password"}
    wrapped = run.start(env, ["--watch", "--interval", "200ms", "--revoke-on-exit"], sh_child())
    wait_until(lambda: wrapped.starts(), timeout=20)
    wait_until(lambda: run.endpoint.metrics().get('envwrap_store_up{store="vault"}') == 1,
               timeout=10)
    time.sleep(1.5)  # several poll intervals: none may read new credentials
    assert len(wrapped.starts()) == 1
    assert len(_new_users(fake_rabbitmq, before, "PUT")) == 1
    assert run.endpoint.metrics()['envwrap_rotations_total{outcome="applied"}'] == 0


def _accessors(openbao: OpenBao) -> set[str]:
    listed = openbao.client.adapter.list("/v1/auth/token/accessors")
    return set(listed["data"]["keys"])


@pytest.mark.parametrize("revoke", [True, False], ids=["revoke-on-exit", "default"])
def test_revoke_on_exit_revokes_the_token_envwrap_logged_in_for(
    openbao: OpenBao, base_env: dict[str, str], run: Run, revoke: bool
) -> None:
    path, value = unique_path(), canary()
    openbao.kv2_put(path, {"value": value})
    openbao.policy("read-secret", 'path "secret/*" { capabilities = ["read"] }')
    role_id, secret_id = openbao.approle("metrics-revoke", ["read-secret"])
    env = {**base_env, "VAULT_ADDR": openbao.addr, "VAULT_ROLE_ID": role_id,
           "VAULT_SECRET_ID": secret_id, VAR: f"vault://secret/{path}#value"}
    before = _accessors(openbao)
    wrapped = run.start(env, ["--revoke-on-exit"] if revoke else ["--init"], sh_child())
    wrapped.wait_start(fp(value))
    logged_in = _accessors(openbao) - before
    assert len(logged_in) == 1
    run.endpoint.assert_clean(value, secret_id)
    os.kill(wrapped.process.pid, signal.SIGTERM)
    assert wrapped.process.wait(20) == 128 + signal.SIGTERM
    if revoke:
        assert not logged_in & _accessors(openbao)
        assert "revoked envwrap's login token" in wrapped.stderr()
    else:
        assert logged_in <= _accessors(openbao)
        openbao.client.auth.token.revoke_accessor(next(iter(logged_in)))
    wrapped.assert_clean(value, secret_id)
    assert_not_leaked(value, run.audit.read_text())
    assert_not_leaked(secret_id, run.audit.read_text())
