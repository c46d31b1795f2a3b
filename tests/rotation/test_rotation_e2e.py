"""``envwrap --watch`` end to end (issue 6): real envwrap, real stores, real children.

Each test runs the installed ``envwrap`` as a process against a real OpenBao
dev server, a real moto server or a real Kubernetes-style volume, rotates a
secret and watches the children it starts. A child prints
``started PID FINGERPRINT`` (sha256 of its secret, first 12 hex digits) as
soon as it runs, so the tests see which value every generation got without
any value being printed. Every test also checks that envwrap printed none of
the values. Waits are deadlines (``wait_until``); the only fixed waits are
the "nothing more happens" windows, a few poll intervals long.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import envwrap_command
from tests.fixtures_aws import MotoServer, aws_env
from tests.fixtures_vault import OpenBao
from tests.helpers import assert_not_leaked, canary, wait_until
from tests.kube import write_volume
from tests.proxy import CountingHttpProxy, TcpProxy

pytestmark = pytest.mark.slow

INTERVAL = "500ms"
INTERVAL_S = 0.5
#: "nothing more happens" window: three poll intervals (with their jitter)
SETTLE = 3 * INTERVAL_S * 1.1 + 0.2
STARTED = re.compile(r"^started (\d+) ([0-9a-f]{12})$")
VAR = "DB_PASSWORD"


def fp(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def sh_child(prelude: str = "") -> list[str]:
    """Prints ``started PID FP`` of $DB_PASSWORD at once, then sleeps."""
    return [
        "/bin/sh", "-c",
        prelude + 'printf "started %s %s\\n" "$$" '
        f'"$(printf %s "${VAR}" | sha256sum | cut -c1-12)"; exec sleep 3600',
    ]


RELOADING_CHILD = """
import hashlib, json, os, signal, sys, time

def fp(value):
    return hashlib.sha256(value.encode()).hexdigest()[:12]

def on_hup(signum, frame):
    with open(sys.argv[1]) as f:
        value = json.load(f)[sys.argv[2]]
    os.write(1, f"reloaded {os.getpid()} {fp(value)}\\n".encode())

signal.signal(signal.SIGHUP, on_hup)
os.write(1, f"started {os.getpid()} {fp(os.environ[sys.argv[2]])}\\n".encode())
while True:
    time.sleep(3600)
"""


class Wrapped:
    """One ``envwrap --watch`` process; its stdout and stderr lines, timed on arrival."""

    def __init__(self, args: list[str], env: Mapping[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [*envwrap_command(), "--no-env-file", "--log-level", "info", *args],
            env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, into: list[tuple[float, str]]) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            with self._lock:
                into.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))

    def starts(self) -> list[tuple[int, str]]:
        """(pid, fingerprint) of every child generation, in order."""
        with self._lock:
            return [(int(m.group(1)), m.group(2)) for _, line in self.out
                    if (m := STARTED.match(line))]

    def lines(self, prefix: str) -> list[str]:
        with self._lock:
            return [line for _, line in self.out if line.startswith(prefix)]

    def stdout(self) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.out)

    def stderr(self) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.err)

    def stderr_time(self, text: str) -> float | None:
        with self._lock:
            return next((at for at, line in self.err if text in line), None)

    def start_time(self, fingerprint: str) -> float | None:
        with self._lock:
            return next((at for at, line in self.out
                         if (m := STARTED.match(line)) and m.group(2) == fingerprint), None)

    def wait_start(self, fingerprint: str, timeout: float = 15) -> int:
        """Wait for a child started with the value of this fingerprint; its pid."""
        def found() -> int | None:
            if self.process.poll() is not None and not any(f == fingerprint
                                                           for _, f in self.starts()):
                raise AssertionError(
                    f"envwrap exited with {self.process.returncode}:\n{self.stderr()}")
            return next((pid for pid, f in self.starts() if f == fingerprint), None)

        try:
            pid = wait_until(found, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; stderr:\n{self.stderr()}") from None
        assert isinstance(pid, int)
        return pid

    def settle(self) -> None:
        """Let a few poll intervals pass, for checks that nothing more happens."""
        time.sleep(SETTLE)
        assert self.process.poll() is None, f"envwrap exited:\n{self.stderr()}"

    def stop(self) -> int | None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        # a safety net: whatever of this run's session is still alive
        for pid, _ in self.starts():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(pid) == self.process.pid:
                    os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        for reader in self._readers:
            reader.join(5)
        return self.process.returncode

    def assert_clean(self, *values: str) -> None:
        """No secret value in envwrap's stderr, nor in the children's stdout."""
        for value in values:
            assert_not_leaked(value, self.stderr(), self.stdout())


#: envwrap_watch(env, child, *options) -> Wrapped
Start = Callable[..., Wrapped]


@pytest.fixture
def envwrap_watch(tmp_path: Path) -> Iterator[Start]:
    """Start ``envwrap --watch --interval 500ms [ARGS] -- CHILD``; stopped at teardown."""
    started: list[Wrapped] = []

    def start(env: Mapping[str, str], child: list[str], *options: str) -> Wrapped:
        args = ["--watch", "--interval", INTERVAL, *options, "--", *child]
        wrapped = Wrapped(args, env, tmp_path)
        started.append(wrapped)
        return wrapped

    yield start
    for wrapped in started:
        wrapped.stop()


def vault_env(base_env: dict[str, str], server: OpenBao, path: str, **extra: str) -> dict[str, str]:
    return {**base_env, **server.env(**extra), VAR: f"vault://secret/{path}#value"}


def unique_path() -> str:
    return f"rotation/{uuid.uuid4().hex[:10]}"


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- one restart per real change --------------------------------------------------------------


def test_vault_kv2_rotation_restarts_once_with_new_value(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("new")
    openbao.kv2_put(path, {"value": old})
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child())
    first = run.wait_start(fp(old))

    openbao.kv2_put(path, {"value": new})
    second = run.wait_start(fp(new))
    run.settle()

    assert run.starts() == [(first, fp(old)), (second, fp(new))]
    assert_gone(first)
    assert "secret changed" in run.stderr() and VAR in run.stderr()
    run.assert_clean(old, new)


def test_aws_sm_rotation_restarts_once(
    aws: MotoServer, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    old, new = canary("old"), canary("new")
    aws.sm.create_secret(Name="rotation/db", SecretString=json.dumps({"password": old}))
    env = {**aws_env(base_env, aws), VAR: "aws-sm://rotation/db#password"}
    run = envwrap_watch(env, sh_child())
    first = run.wait_start(fp(old))

    aws.sm.put_secret_value(SecretId="rotation/db", SecretString=json.dumps({"password": new}))
    second = run.wait_start(fp(new))
    run.settle()

    assert run.starts() == [(first, fp(old)), (second, fp(new))]
    assert_gone(first)
    run.assert_clean(old, new)


def test_kubelet_atomic_swap_restarts_once(
    tmp_path: Path, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    volume = tmp_path / "volume"
    old, new = canary("old"), canary("new")
    write_volume(volume, {"password": old, "username": "app"})
    env = {**base_env, VAR: f"ref+file://{volume}/password"}
    run = envwrap_watch(env, sh_child())
    first = run.wait_start(fp(old))

    write_volume(volume, {"password": new, "username": "app"})
    second = run.wait_start(fp(new), timeout=5)
    run.settle()

    assert run.starts() == [(first, fp(old)), (second, fp(new))]
    assert_gone(first)
    run.assert_clean(old, new)


def test_new_version_with_same_value_does_not_restart(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    value = canary("same")
    openbao.kv2_put(path, {"value": value})
    proxy = CountingHttpProxy(openbao.addr)
    try:
        run = envwrap_watch(vault_env(base_env, openbao, path, VAULT_ADDR=proxy.url), sh_child())
        first = run.wait_start(fp(value))
        written = time.monotonic()
        assert openbao.kv2_put(path, {"value": value}) == 2

        # envwrap saw the new version: it read the value (once) to compare it
        def value_read_after_write() -> bool:
            return any(r.method == "GET" and r.path == f"/v1/secret/data/{path}"
                       for r in proxy.since(written))

        wait_until(value_read_after_write, timeout=5)
        run.settle()
        assert run.starts() == [(first, fp(value))]
        reads = [r for r in proxy.since(written) if r.path == f"/v1/secret/data/{path}"]
        assert len(reads) == 1, "the value is read once per new version, not every poll"
        run.assert_clean(value)
    finally:
        proxy.close()


def test_burst_of_writes_restarts_at_most_twice_and_ends_on_last_value(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    old = canary("old")
    openbao.kv2_put(path, {"value": old})
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child())
    first = run.wait_start(fp(old))

    burst = [canary(f"burst{i}") for i in range(5)]
    for value in burst:
        openbao.kv2_put(path, {"value": value})
    run.wait_start(fp(burst[-1]))
    run.settle()

    starts = run.starts()
    assert starts[0] == (first, fp(old))
    assert 2 <= len(starts) <= 3, f"{len(starts) - 1} restarts for one burst"
    assert starts[-1][1] == fp(burst[-1])
    assert len({pid for pid, _ in starts}) == len(starts)
    run.assert_clean(old, *burst)


# -- other reactions ---------------------------------------------------------------------------


def test_signal_mode_renders_file_before_signalling_same_pid(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start, tmp_path: Path
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("new")
    openbao.kv2_put(path, {"value": old})
    rendered = tmp_path / "run" / "secrets.json"
    rendered.parent.mkdir()
    child = [sys.executable, "-c", RELOADING_CHILD, str(rendered), VAR]
    run = envwrap_watch(vault_env(base_env, openbao, path), child,
                        "--on-change", "signal", "--reload-signal", "SIGHUP",
                        "--render", str(rendered))
    pid = run.wait_start(fp(old))
    assert json.loads(rendered.read_text())[VAR] == old

    openbao.kv2_put(path, {"value": new})
    wait_until(lambda: run.lines("reloaded "), timeout=15)
    run.settle()

    # the child read the file on SIGHUP and found the new value there: it was
    # written before the signal was sent
    assert run.lines("reloaded ") == [f"reloaded {pid} {fp(new)}"]
    assert run.starts() == [(pid, fp(old))], "signal mode must not restart"
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    assert json.loads(rendered.read_text())[VAR] == new
    run.assert_clean(old, new)


def test_store_outage_keeps_child_then_applies_change_once_back(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("new")
    openbao.kv2_put(path, {"value": old})
    port = int(openbao.addr.rsplit(":", 1)[1])
    proxy = TcpProxy(port)
    try:
        run = envwrap_watch(vault_env(base_env, openbao, path, VAULT_ADDR=proxy.url), sh_child())
        first = run.wait_start(fp(old))

        proxy.cut()
        wait_until(lambda: run.stderr_time("unreachable"), timeout=10)
        warning = next(line for line in run.stderr().splitlines() if "unreachable" in line)
        assert "warning" in warning and VAR in warning
        openbao.kv2_put(path, {"value": new})  # changed while envwrap cannot see it
        run.settle()
        assert run.starts() == [(first, fp(old))], "the child keeps running on the old values"
        os.kill(first, 0)

        proxy.restore()
        second = run.wait_start(fp(new), timeout=15)
        run.settle()
        assert run.starts() == [(first, fp(old)), (second, fp(new))]
        run.assert_clean(old, new)
    finally:
        proxy.close()


def test_on_change_exit_exits_75(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("new")
    openbao.kv2_put(path, {"value": old})
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child(), "--on-change", "exit")
    first = run.wait_start(fp(old))

    openbao.kv2_put(path, {"value": new})
    wait_until(lambda: run.process.poll() is not None, timeout=15)

    assert run.process.returncode == 75, run.stderr()
    assert run.starts() == [(first, fp(old))], "exit mode must not start a new child"
    assert_gone(first)
    run.assert_clean(old, new)


def test_restart_escalates_to_sigkill_after_kill_timeout(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("new")
    openbao.kv2_put(path, {"value": old})
    # SIGTERM ignored by the shell, and by the sleep it becomes (SIG_IGN survives exec)
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child("trap '' TERM; "),
                        "--kill-timeout", "1s")
    first = run.wait_start(fp(old))

    openbao.kv2_put(path, {"value": new})
    second = run.wait_start(fp(new), timeout=15)

    asked = run.stderr_time("restarting the program")
    began = run.start_time(fp(new))
    assert asked is not None and began is not None
    assert 0.9 <= began - asked <= 4, f"new child {began - asked:.2f}s after the restart began"
    assert "did not stop within 1s" in run.stderr() and "SIGKILL" in run.stderr()
    assert_gone(first)
    assert run.starts() == [(first, fp(old)), (second, fp(new))]
    run.assert_clean(old, new)
