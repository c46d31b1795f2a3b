"""Handoff with a program that binds its own port (docs/rotation.md): envwrap says at
start what will happen, and when the new generation fails beside the running one it
blames the port, not the secrets, and names the process that keeps running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.fixtures_vault import free_port
from testsupport.helpers import LineCollector, assert_not_leaked, canary, stop_process, wait_until

pytestmark = pytest.mark.slow

#: a server that binds PORT itself (no --listen), as `server.listen(3000)` does;
#: with BIND=0 it binds nothing (the negative control)
SERVER = r"""
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
if os.environ["APP_SECRET"].startswith("bad"):
    print("rejecting", os.getpid(), flush=True)
    sys.exit(3)
if os.environ.get("BIND") != "0":
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", int(os.environ["PORT"])))
    except OSError as exc:
        print("eaddrinuse", os.getpid(), "Error: listen EADDRINUSE", exc, flush=True)
        sys.exit(1)
    sock.listen()
print("listening", os.getpid(), flush=True)
while True:
    time.sleep(3600)
"""


def start(tmp_path: Path, base_env: dict[str, str], value: str,
          env: dict[str, str]) -> tuple[subprocess.Popen[str], LineCollector, LineCollector, Path]:
    secret = tmp_path / "secrets" / "secret"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(value)
    proc = subprocess.Popen(
        [*envwrap_command(), "--no-env-file", "--watch", "--interval", "5s",
         "--on-change", "handoff", "--ready", r"log:^listening \d+",
         "--", sys.executable, "-c", SERVER],
        env={**base_env, "APP_SECRET": f"ref+file://{secret}", "PORT": str(free_port()), **env},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    return proc, LineCollector(proc.stdout), LineCollector(proc.stderr), secret


def rotate(secret: Path, value: str) -> None:
    staging = secret.with_name("new")
    staging.write_text(value)
    os.replace(staging, secret)


def first_pid(out: LineCollector, prefix: str) -> int:
    def found() -> int | None:
        for line in out.text().splitlines():
            if line.startswith(prefix):
                return int(line.split()[1])
        return None

    pid = wait_until(found, timeout=20)
    assert isinstance(pid, int)
    return pid


def test_a_program_that_binds_its_own_port_is_explained(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, second = canary("good"), canary("good")
    proc, out, err, secret = start(tmp_path, base_env, first, {})
    try:
        # at start: what will happen, before the first rotation
        err.wait_for("--on-change handoff without --listen")
        assert "address already in use" in err.text() and "--listen :PORT" in err.text()
        old = first_pid(out, "listening")
        rotate(secret, second)
        err.wait_for("keeps running", timeout=30)
        failed = first_pid(out, "eaddrinuse")  # the candidate's own words
        text = err.text()
        assert "failed with the new secrets" not in text
        assert "could not run beside the current one" in text
        assert f"the running generation (pid {old}) listens on port" in text
        assert "--listen :" in text
        # "keeps running" names the process that runs, and the failed one apart
        line = next(line for line in text.splitlines() if "keeps running" in line)
        assert f"pid={old}" in line and f"failed={failed}" in line
        assert proc.poll() is None  # envwrap goes on with the old generation
    finally:
        stop_process(proc)
    assert_not_leaked(first, err.text(), out.text())
    assert_not_leaked(second, err.text(), out.text())


def test_negative_control_a_program_that_rejects_the_secret_is_blamed_on_the_secret(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, bad = canary("good"), canary("bad")
    proc, out, err, secret = start(tmp_path, base_env, first, {"BIND": "0"})
    try:
        old = first_pid(out, "listening")
        rotate(secret, bad)
        err.wait_for("keeps running", timeout=30)
        text = err.text()
        assert "the program failed with the new secrets" in text
        assert "listens on port" not in text
        line = next(line for line in text.splitlines() if "keeps running" in line)
        assert f"pid={old}" in line
    finally:
        stop_process(proc)
