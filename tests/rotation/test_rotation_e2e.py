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

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from testsupport.fixtures_aws import MotoServer, aws_env
from testsupport.fixtures_vault import OpenBao
from testsupport.helpers import canary, fp, wait_until
from testsupport.kube import write_volume
from testsupport.proxy import CountingHttpProxy, TcpProxy
from testsupport.rotation import VAR, Start, sh_child, unique_path, vault_env

pytestmark = pytest.mark.slow

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

        # envwrap saw the new version: its poll reads the secret, version and value at once
        def value_read_after_write() -> bool:
            return any(r.method == "GET" and r.path == f"/v1/secret/data/{path}"
                       for r in proxy.since(written))

        wait_until(value_read_after_write, timeout=5)
        run.settle()
        assert run.starts() == [(first, fp(value))]
        seen = proxy.since(written)
        polls = [r for r in seen if r.path == f"/v1/secret/data/{path}"]
        # one request per poll (--interval 500ms here), and no other request:
        # no metadata read, no second read to confirm, no token lookup
        assert polls and all(r.method == "GET" for r in polls)
        assert [r for r in seen if r not in polls] == []
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
