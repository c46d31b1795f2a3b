"""Test helpers: run the installed envwrap as a real process, wait without sleeping blind."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from testsupport import envwrap_command


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


def forms(value: str) -> list[bytes]:
    """Every way the file might hold ``value``: plain, JSON-escaped, hex, base64 at
    each of the three alignments (standard and URL-safe), without the edge
    characters that depend on the neighbouring bytes."""
    raw = value.encode()
    found = [raw, json.dumps(value).encode()[1:-1], json.dumps(value, ensure_ascii=False)
             .encode()[1:-1], raw.hex().encode(), raw.hex().upper().encode()]
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw)
            skip = 4 * ((offset + 2) // 3)  # the groups that hold the padding bytes
            found.append(text[skip:-4])
    return [form for form in found if len(form) >= 8]


def fp(value: str) -> str:
    """A value's fingerprint (sha256, first 12 hex digits): which value a child got,
    without the value itself ever being printed."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


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


def stop_process(process: subprocess.Popen[Any], signum: int = signal.SIGTERM,
                 timeout: float = 20) -> int:
    """Ask ``process`` to stop with ``signum``; SIGKILL it if it is still there after
    ``timeout`` seconds. Returns its exit status."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


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
