"""``ref+file://`` reads regular files only: a FIFO, a device or a socket is refused
(exit 65) without being read, so start-up never blocks on one. Real files, through
the real command.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testsupport.helpers import assert_not_leaked, canary, fp, run_envwrap

ARGS = ["--no-env-file", "--start-timeout", "2s"]


def _fifo(folder: Path) -> Path:
    path = folder / "fifo"
    os.mkfifo(path, 0o600)
    return path


def _socket(folder: Path) -> Path:
    path = folder / "socket"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # left bound: the file stays a socket for the test
    return path


@pytest.mark.parametrize(("kind", "make", "words"), [
    ("fifo", _fifo, "a FIFO (named pipe)"),
    ("device", lambda _: Path("/dev/zero"), "a character device"),
    ("socket", _socket, "a socket"),
])
def test_a_file_reference_to_something_not_a_regular_file_is_refused_at_once(
    base_env: dict[str, str], tmp_path: Path, kind: str, make: Callable[[Path], Path],
    words: str,
) -> None:
    target = make(tmp_path)
    env = {**base_env, "DB_PASSWORD": f"ref+file://{target}"}
    started = time.monotonic()
    result = run_envwrap([*ARGS, "--", "touch", str(tmp_path / "started")], env=env, timeout=20)
    assert result.returncode == 65, result.stderr
    assert time.monotonic() - started < 5
    assert f"DB_PASSWORD: ref+file://{target}: the path is {words}, not a regular file" \
        in result.stderr
    assert not (tmp_path / "started").exists()


def test_a_symbolic_link_to_a_regular_file_is_read_as_a_secret_volume_needs(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    value = canary()
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "password").write_text(value + "\n")
    (tmp_path / "password").symlink_to(tmp_path / "..data" / "password")
    env = {**base_env, "DB_PASSWORD": f"ref+file://{tmp_path / 'password'}"}
    result = run_envwrap([*ARGS, "--", "sh", "-c", 'printf %s "$DB_PASSWORD" | sha256sum'],
                         env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(fp(value))
    assert_not_leaked(value, result.stderr)
