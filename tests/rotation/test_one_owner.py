"""One owner of what runs: a change the store takes back while it is held is never
applied, and what envwrap reports is what the program runs on.

The installed ``envwrap --watch`` runs against a real OpenBao with
``--restart-limit``; the store goes ``A -> B -> C -> B``: ``B`` is applied (the
window's one restart), ``C`` is held (the window is full), and ``B`` comes back
before the window opens. The program must never run on ``C``, no ``rotation
applied`` record may follow the read of ``C``, and ``envwrap_secret_info`` must
name a version that holds ``B``. The negative controls let the window open on
``C``: then the program does run on ``C`` -- the same checks see it.

A child prints ``started PID FINGERPRINT`` (sha256 of its secret, 12 hex
digits), so no value is ever printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.fixtures_vault import OpenBao, free_port
from testsupport.helpers import assert_not_leaked, canary, wait_until

pytestmark = pytest.mark.slow

VAR = "DB_PASSWORD"
WINDOW = 4.0
STARTED = re.compile(r"^started (\d+) ([0-9a-f]{12})$")
MODES = {"restart": [], "handoff": ["--on-change", "handoff", "--ready", "200ms"]}
CHILD = [
    "/bin/sh", "-c",
    f'printf "started %s %s\\n" "$$" "$(printf %s "${VAR}" | sha256sum | cut -c1-12)"; '
    "exec sleep 3600",
]


def fp(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


class Envwrap:
    """One ``envwrap --watch --restart-limit`` with ``--metrics`` and ``--audit-log``."""

    def __init__(self, env: Mapping[str, str], options: list[str], workdir: Path) -> None:
        self.audit = workdir / "audit" / "audit.log"
        self.audit.parent.mkdir(exist_ok=True)
        self.port = free_port()
        self.process = subprocess.Popen(
            [*envwrap_command(), "--no-env-file", "--log-level", "info", "--watch",
             "--interval", "300ms", "--restart-limit", f"1/{WINDOW:g}s", *options,
             "--metrics", f"127.0.0.1:{self.port}", "--audit-log", str(self.audit),
             "--", *CHILD],
            env=dict(env), cwd=workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                         for stream, into in ((self.process.stdout, self.out),
                                              (self.process.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, into: list[str]) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            into.append(raw.decode(errors="replace").rstrip("\n"))

    def starts(self) -> list[str]:
        """The fingerprint of every generation's secret, in order."""
        return [m.group(2) for line in list(self.out) if (m := STARTED.match(line))]

    def stderr(self) -> str:
        return "\n".join(self.err)

    def wait_start(self, value: str, timeout: float = 15) -> None:
        try:
            wait_until(lambda: fp(value) in self.starts(), timeout=timeout)
        except AssertionError:
            raise AssertionError(f"no generation on the value; stderr:\n{self.stderr()}") from None

    def wait_stderr(self, text: str, timeout: float = 15) -> None:
        try:
            wait_until(lambda: text in self.stderr(), timeout=timeout)
        except AssertionError:
            raise AssertionError(f"never logged {text!r}; stderr:\n{self.stderr()}") from None

    def records(self, event: str) -> list[dict[str, object]]:
        lines = self.audit.read_text().splitlines() if self.audit.exists() else []
        return [r for r in map(json.loads, lines) if r["event"] == event]

    def applied_after_version(self, version: int) -> int:
        """How many ``rotation applied`` records follow the read of ``version``."""
        lines = self.audit.read_text().splitlines() if self.audit.exists() else []
        seen, count = False, 0
        for record in map(json.loads, lines):
            if record["event"] == "access" and str(record.get("version")) == str(version):
                seen = True
            elif seen and record["event"] == "rotation" and record["outcome"] == "applied":
                count += 1
        return count

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def info_versions(self) -> set[str]:
        return set(re.findall(r'envwrap_secret_info\{[^}]*version="([^"]*)"', self.metrics()))

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        for reader in self._readers:
            reader.join(5)

    def assert_clean(self, *values: str) -> None:
        audit = self.audit.read_text() if self.audit.exists() else ""
        for value in values:
            assert_not_leaked(value, self.stderr(), "\n".join(self.out), audit, self.metrics())


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    started: list[Envwrap] = []

    def run(env: Mapping[str, str], options: list[str]) -> Envwrap:
        one = Envwrap(env, options, tmp_path)
        started.append(one)
        return one

    yield run
    for one in started:
        one.stop()


def held_then(openbao: OpenBao, base_env: dict[str, str], start: object, mode: str,
              take_back: bool) -> tuple[Envwrap, str, str, str]:
    """A, then B (applied), then C (held); then B again unless not ``take_back``."""
    path = f"one-owner-{uuid.uuid4().hex[:8]}"
    a, b, c = canary("a"), canary("b"), canary("c")
    assert openbao.kv2_put(path, {"value": a}) == 1
    env = {**base_env, **openbao.env(), VAR: f"vault://secret/{path}#value"}
    wrapped = start(env, MODES[mode])  # type: ignore[operator]
    assert isinstance(wrapped, Envwrap)
    wrapped.wait_start(a)
    assert openbao.kv2_put(path, {"value": b}) == 2
    wrapped.wait_start(b)
    wait_until(lambda: wrapped.records("rotation"), timeout=15)  # B counts (handoff: ready)
    assert openbao.kv2_put(path, {"value": c}) == 3
    wrapped.wait_stderr("restart held by --restart-limit")
    if take_back:
        assert openbao.kv2_put(path, {"value": b}) == 4
        wait_until(lambda: any(str(r.get("version")) == "4" for r in wrapped.records("access")),
                   timeout=15)  # envwrap read it
    return wrapped, a, b, c


@pytest.mark.parametrize("mode", list(MODES))
def test_a_change_taken_back_while_held_is_never_applied(
    openbao: OpenBao, base_env: dict[str, str], start: object, mode: str
) -> None:
    wrapped, a, b, c = held_then(openbao, base_env, start, mode, take_back=True)
    time.sleep(WINDOW + 1.5)  # the window opens: nothing may be applied then
    assert wrapped.process.poll() is None, wrapped.stderr()
    assert wrapped.starts() == [fp(a), fp(b)]
    assert fp(c) not in wrapped.starts()
    applied = [r for r in wrapped.records("rotation") if r["outcome"] == "applied"]
    assert len(applied) == 1  # B's; none claims C or a return to B that never ran
    assert wrapped.applied_after_version(3) == 0
    # the version the program runs on: B's value (version 2, or 4 which holds it too)
    wait_until(lambda: wrapped.info_versions() == {"4"}, timeout=10)
    wrapped.assert_clean(a, b, c)


@pytest.mark.parametrize("mode", list(MODES))
def test_negative_control_a_held_change_not_taken_back_runs_when_the_window_opens(
    openbao: OpenBao, base_env: dict[str, str], start: object, mode: str
) -> None:
    wrapped, a, b, c = held_then(openbao, base_env, start, mode, take_back=False)
    wrapped.wait_start(c, timeout=WINDOW + 10)
    assert wrapped.starts() == [fp(a), fp(b), fp(c)]
    wait_until(lambda: wrapped.applied_after_version(3) == 1, timeout=10)
    wait_until(lambda: wrapped.info_versions() == {"3"}, timeout=10)
    wrapped.assert_clean(a, b, c)
