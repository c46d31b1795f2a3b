"""Test helpers: run the installed envwrap as a real process, wait without sleeping blind."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

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
