"""Test helpers: run the installed envwrap as a real process, wait without sleeping blind."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from tests.conftest import envwrap_command


def canary(label: str = "canary") -> str:
    """A unique secret value that cannot appear anywhere by accident."""
    return f"{label}-{secrets.token_hex(12)}"


def run_envwrap(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | Path | None = None,
    timeout: float = 60,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*envwrap_command(), *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


def assert_not_leaked(value: str, *texts: str) -> None:
    for text in texts:
        assert value not in text, "a secret value leaked into envwrap's output"


def wait_until(condition: Callable[[], object], timeout: float = 10, interval: float = 0.02) -> object:
    """Poll ``condition`` until it is truthy; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class LineCollector:
    """Collects a stream's lines in a thread, so tests can wait for one without blocking."""

    def __init__(self, stream: IO[str]) -> None:
        import threading

        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, fragment: str, timeout: float = 10) -> None:
        wait_until(lambda: fragment in self.text(), timeout=timeout)

    def join(self, timeout: float = 10) -> str:
        self._thread.join(timeout)
        return self.text()
