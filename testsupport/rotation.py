"""The rotation end-to-end tests' child and harness: ``envwrap --watch`` as a process.

A child (:func:`sh_child`) prints ``started PID FINGERPRINT`` (:func:`fp` of its
``$DB_PASSWORD``) as soon as it runs; :class:`Wrapped` collects envwrap's lines,
timed on arrival. The ``envwrap_watch`` fixture starts one and stops it at teardown
(registered through ``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.fixtures_vault import OpenBao
from testsupport.helpers import assert_not_leaked, wait_until

INTERVAL = "500ms"
INTERVAL_S = 0.5
#: "nothing more happens" window: three poll intervals (with their jitter)
SETTLE = 3 * INTERVAL_S * 1.1 + 0.2
STARTED = re.compile(r"^started (\d+) ([0-9a-f]{12})$")
VAR = "DB_PASSWORD"


def sh_child(prelude: str = "") -> list[str]:
    """Prints ``started PID FP`` of $DB_PASSWORD at once, then sleeps."""
    return [
        "/bin/sh", "-c",
        prelude + 'printf "started %s %s\\n" "$$" '
        f'"$(printf %s "${VAR}" | sha256sum | cut -c1-12)"; exec sleep 3600',
    ]


class Wrapped:
    """One ``envwrap --watch`` process; its stdout and stderr lines, timed on arrival."""

    #: what goes between the command and the options (``("sidecar",)``: ``envwrap sidecar``)
    subcommand: tuple[str, ...] = ()

    def __init__(self, args: list[str], env: Mapping[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [*envwrap_command(), *self.subcommand, "--no-env-file", "--log-level", "info",
             *args],
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
