"""The sidecar signals only a process its pid file may name (docs/SECURITY.md, "Sidecar targets").

The pid file must be a regular file owned by envwrap's user or root, writable by
nobody else, and name a process of the file's owner. Run as root, as the suite
is: a pid file that ``nobody`` wrote could otherwise make it signal any process.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.helpers import LineCollector, assert_not_leaked, canary, wait_until
from testsupport.unprivileged import NOBODY, as_nobody, reachable

TARGET = """
import os, signal, time
signal.signal(signal.SIGHUP, lambda *a: print("SIGHUP", flush=True))
print("ready", os.getpid(), flush=True)
while True:
    time.sleep(3600)
"""


def start_target(prefix: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*prefix, sys.executable, "-c", TARGET],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("ready")
    return proc


def signalled(proc: subprocess.Popen[str]) -> bool:
    assert proc.stdout is not None
    return bool(select.select([proc.stdout], [], [], 0)[0])


@pytest.fixture
def root_target() -> Iterator[subprocess.Popen[str]]:
    proc = start_target([])
    yield proc
    proc.kill()
    proc.wait()


def sidecar(workdir: Path, base_env: dict[str, str], pid_file: Path,
            secret: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*envwrap_command(), "sidecar", "--render", str(workdir / "out.env"),
         "--target-pid-file", str(pid_file), "--interval", "30s"],
        env={**base_env, "TOKEN": f"ref+file://{secret}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("flaw", ["writable-by-others", "owned-by-another-user", "symlink"])
def test_an_untrusted_pid_file_is_refused_at_start(
    flaw: str, workdir: Path, base_env: dict[str, str], root_target: subprocess.Popen[str]
) -> None:
    value = canary()
    secret = workdir / "token"
    secret.write_text(value)
    pid_file = workdir / "app.pid"
    real = workdir / "real.pid"
    real.write_text(str(root_target.pid))
    if flaw == "symlink":
        pid_file.symlink_to(real)
    else:
        pid_file.write_text(str(root_target.pid))
        if flaw == "writable-by-others":
            pid_file.chmod(0o666)
        else:
            os.chown(pid_file, NOBODY, -1)
    proc = sidecar(workdir, base_env, pid_file, secret)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # it did not refuse: it must not outlive the test
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 78, err
    assert "--target-pid-file" in err and str(pid_file) in err
    assert_not_leaked(value, out, err)
    assert not (workdir / "out.env").exists()  # refused before any store was read
    assert not signalled(root_target)


def test_a_pid_file_naming_another_users_process_is_refused_at_a_change(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # The pid file is envwrap's own (root's, 0644) but names a process of
    # nobody's: written after start, it is checked when a change comes.
    secret = workdir / "token"
    secret.write_text(canary())
    pid_file = workdir / "app.pid"
    with reachable():
        theirs = start_target(as_nobody())
    proc = sidecar(workdir, base_env, pid_file, secret)
    assert proc.stderr is not None
    log = LineCollector(proc.stderr)
    try:
        wait_until(lambda: (workdir / "out.env").exists(), timeout=15)
        pid_file.write_text(str(theirs.pid))
        secret.write_text(value := canary())
        log.wait_for("not signalling the target", timeout=15)
        assert f"process {theirs.pid}" in log.text() and f"uid {NOBODY}" in log.text()
        assert not signalled(theirs)
        assert_not_leaked(value, log.text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        theirs.kill()
        theirs.wait()


def test_negative_control_a_trusted_pid_file_gets_its_target_signalled(
    workdir: Path, base_env: dict[str, str], root_target: subprocess.Popen[str]
) -> None:
    secret = workdir / "token"
    secret.write_text(canary())
    pid_file = workdir / "app.pid"
    pid_file.write_text(str(root_target.pid))
    pid_file.chmod(0o644)
    proc = sidecar(workdir, base_env, pid_file, secret)
    try:
        wait_until(lambda: (workdir / "out.env").exists(), timeout=15)
        secret.write_text(canary())
        wait_until(lambda: signalled(root_target), timeout=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
