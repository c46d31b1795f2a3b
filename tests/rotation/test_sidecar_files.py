"""Rotation of file secrets with real processes: sidecar and --render, Kubernetes volumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.helpers import assert_not_leaked, canary, wait_until
from testsupport.kube import write_volume

TARGET = """
import os, signal, sys, time
print("ready", os.getpid(), flush=True)
signal.signal(signal.SIGHUP, lambda *a: print("SIGHUP", flush=True))
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(3600)
"""


def read_lines(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stdout is not None
    return [proc.stdout.readline().strip() for _ in range(count)]


@pytest.fixture
def target(workdir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
    assert read_lines(proc, 1)[0].startswith("ready")
    (workdir / "app.pid").write_text(str(proc.pid))
    yield proc
    proc.kill()
    proc.wait()


def test_sidecar_renders_and_signals_after_a_kubelet_swap(
    workdir: Path, base_env: dict[str, str], target: subprocess.Popen[str]
) -> None:
    first, second = canary("first"), canary("second")
    volume = workdir / "secrets"
    write_volume(volume, {"password": first, "api-key": "static-key-value"})
    rendered = workdir / "out" / "secrets.json"
    rendered.parent.mkdir()
    env = {**base_env, "DB_PASSWORD": f"ref+file://{volume}/password",
           "AT_API_KEY": f"ref+file://{volume}/api-key"}
    sidecar = subprocess.Popen(
        [*envwrap_command(), "sidecar", "--render", str(rendered), "--target-pid-file",
         str(workdir / "app.pid"), "--interval", "30s", "--log-level", "debug"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: rendered.exists() and json.loads(rendered.read_text())["DB_PASSWORD"] == first)
        assert rendered.stat().st_mode & 0o777 == 0o600
        write_volume(volume, {"password": second, "api-key": "static-key-value"})
        wait_until(lambda: json.loads(rendered.read_text())["DB_PASSWORD"] == second, timeout=10)
        assert read_lines(target, 1) == ["SIGHUP"]
    finally:
        sidecar.send_signal(signal.SIGTERM)
        out, err = sidecar.communicate(timeout=10)
    assert sidecar.returncode == 0, err
    assert_not_leaked(first, out, err)
    assert_not_leaked(second, out, err)


def test_sidecar_finds_the_target_by_name(workdir: Path, base_env: dict[str, str]) -> None:
    secret_file = workdir / "token"
    secret_file.write_text("token-one")
    script = workdir / "fake-app"
    script.write_text("#!" + sys.executable + "\n" + TARGET)
    script.chmod(0o755)
    app = subprocess.Popen([str(script)], stdout=subprocess.PIPE, text=True)
    assert read_lines(app, 1)[0].startswith("ready")
    rendered = workdir / "app.env"
    sidecar = subprocess.Popen(
        [*envwrap_command(), "sidecar", "--render", str(rendered), "--target-name", "fake-app",
         "--interval", "30s", "--log-level", "debug"],
        env={**base_env, "TOKEN": f"ref+file://{secret_file}"}, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: rendered.exists())
        assert "TOKEN='token-one'" in rendered.read_text()
        tmp = workdir / "token.tmp"
        tmp.write_text("token-two")
        os.replace(tmp, secret_file)
        wait_until(lambda: "token-two" in rendered.read_text(), timeout=10)
        assert read_lines(app, 1) == ["SIGHUP"]
    finally:
        sidecar.send_signal(signal.SIGTERM)
        _, err = sidecar.communicate(timeout=10)
        assert_not_leaked("token-two", err)
        app.kill()
        app.wait()


def test_sidecar_refinds_a_restarted_target_and_waits_for_it(
    workdir: Path, base_env: dict[str, str]
) -> None:
    secret_file = workdir / "token"
    secret_file.write_text("generation-one")
    pid_file = workdir / "app.pid"
    rendered = workdir / "app.json"
    sidecar = subprocess.Popen(
        [*envwrap_command(), "sidecar", "--render", str(rendered), "--target-pid-file",
         str(pid_file), "--interval", "30s"],
        env={**base_env, "TOKEN": f"ref+file://{secret_file}"}, stderr=subprocess.PIPE, text=True,
    )
    apps: list[subprocess.Popen[str]] = []
    try:
        wait_until(lambda: rendered.exists())  # rendered before any target exists
        for generation in ("two", "three"):
            app = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
            apps.append(app)
            assert read_lines(app, 1)[0].startswith("ready")
            pid_file.write_text(str(app.pid))
            tmp = workdir / "token.tmp"
            tmp.write_text(f"generation-{generation}")
            os.replace(tmp, secret_file)
            assert read_lines(app, 1) == ["SIGHUP"]  # the new PID, found again
            assert json.loads(rendered.read_text())["TOKEN"] == f"generation-{generation}"
            app.kill()
            app.wait()
    finally:
        sidecar.send_signal(signal.SIGTERM)
        _, err = sidecar.communicate(timeout=10)
        for app in apps:
            if app.poll() is None:
                app.kill()
    assert sidecar.returncode == 0, err
    assert_not_leaked("generation-three", err)
