"""Helpers for the supervise-mode tests: a line reader with deadlines, process checks."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import psutil

from testsupport import PROGRAMS, envwrap_command

ECHO = [sys.executable, str(PROGRAMS / "signal_echo.py")]
ORPHANS = [sys.executable, str(PROGRAMS / "orphan_maker.py")]


class Lines:
    """Reads lines from a descriptor, each with a deadline (never a blind sleep)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.seen: list[str] = []
        self.eof = False

    def next(self, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.eof:
                raise AssertionError(f"EOF before a line; seen {self.seen!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line within {timeout}s; seen {self.seen!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: a pty whose other side is closed
                chunk = b""
            if not chunk:
                self.eof = True
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        text = line.decode(errors="replace").rstrip("\r")
        self.seen.append(text)
        return text

    def until(self, prefix: str, timeout: float = 10) -> str:
        """Skip lines until one starts with ``prefix``; return it from there.

        (On a terminal a line may begin with the echo of a control key, ``^Z``.)
        """
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.01, deadline - time.monotonic()))
            if prefix in line:
                return line[line.index(prefix):]

    def rest(self, timeout: float = 10) -> list[str]:
        """Every line until EOF."""
        lines = []
        while True:
            try:
                lines.append(self.next(timeout))
            except AssertionError:
                if self.eof:
                    if self.buffer:
                        lines.append(self.buffer.decode(errors="replace"))
                    return lines
                raise


class Envwrap:
    """A running ``envwrap`` with its stdout read line by line."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        prefix: Sequence[str] = (),
        stdin: int | None = subprocess.DEVNULL,
    ) -> None:
        self.proc = subprocess.Popen(
            [*prefix, *envwrap_command(), "--no-env-file", *args],
            env=dict(env),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout.fileno())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self, timeout: float = 15) -> int:
        """Wait for the echo child's ``ready PID`` line; return its PID."""
        return int(self.lines.until("ready", timeout).split()[1])

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 15) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody reaped)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def absent(pid: int) -> bool:
    """The process is gone and reaped (no /proc entry, not even a zombie)."""
    return not psutil.pid_exists(pid)


def tree_of(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_quietly(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)


def status_fields(text: str, *names: str) -> dict[str, str]:
    """``SigBlk``, ``SigIgn`` ... out of a /proc/PID/status dump."""
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in names:
            found[key] = value.strip()
    return found


def run(
    argv: Sequence[str], env: Mapping[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL,
    )
