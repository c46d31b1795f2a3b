"""The handoff tests' child and harness: one ``envwrap --watch`` with a file secret.

The child (:data:`CHILD`) serves HTTP on the ``--listen`` socket it finds on fd 3 and
answers ``{"pid": N, "fp": F}`` (F: the first 12 hex digits of the sha256 of
its secret, so the tests see which value a generation got without printing
it). It prints one line per event, with ``os.write`` so that lines of two
generations sharing the pipe keep their order:

- ``started PID FP PORT`` at once;
- a value starting with ``bad`` makes it print ``rejecting PID`` and exit 3
  (a program that refuses a secret);
- a value starting with ``hang`` makes it serve but never report ready:
  ``hanging PID NOTIFY_SOCKET``;
- otherwise, after ``$READY_DELAY`` seconds, ``ready PID FP`` and then
  ``READY=1`` to ``$NOTIFY_SOCKET`` (printed first, so that the line precedes
  anything envwrap does about it);
- ``signal PID NAME`` for SIGTERM/SIGINT, after which it finishes the request
  in hand and exits 0.

Secrets are ``ref+file://`` files (fast to rotate); :class:`Run` starts envwrap with
one, rotates it, and reads envwrap's lines and audit log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from testsupport import envwrap_command
from testsupport.helpers import LineCollector, assert_not_leaked, fp, stop_process, wait_until

CHILD = r'''
import hashlib, json, os, select, signal, socket, sys, time

value = os.environ.get("APP_SECRET", "")
fp = hashlib.sha256(value.encode()).hexdigest()[:12]
pid = os.getpid()
stopping = []


def say(line):
    os.write(1, (line + "\n").encode())


def on_signal(signum, frame):
    say(f"signal {pid} {signal.Signals(signum).name}")
    if signum in (signal.SIGTERM, signal.SIGINT):
        stopping.append(signum)


for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
    signal.signal(signum, on_signal)
if value.startswith("stubborn"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
listener = socket.socket(fileno=3) if os.environ.get("LISTEN_FDS") else None
port = listener.getsockname()[1] if listener is not None else 0
say(f"started {pid} {fp} {port}")
if os.environ.get("PRINT_SECRET"):
    say(f"value {pid} {value}")
if value.startswith("bad"):
    say(f"rejecting {pid}")
    sys.exit(3)
if os.path.exists(os.environ.get("FAIL_FLAG", "/nonexistent")):
    say(f"failing {pid}")
    sys.exit(4)
if os.environ.get("GRANDCHILD"):
    grandchild = os.fork()
    if grandchild == 0:  # deaf to SIGTERM: only a SIGKILL of the tree ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    say(f"grandchild {pid} {grandchild}")
if listener is not None:
    # a shared socket: another generation may take a connection first
    listener.setblocking(False)
time.sleep(float(os.environ.get("READY_DELAY", "0.1")))
notify = os.environ.get("NOTIFY_SOCKET", "")
if value.startswith("hang"):
    say(f"hanging {pid} {notify}")
else:
    say(f"ready {pid} {fp}")
    if notify:
        address = "\0" + notify[1:] if notify.startswith("@") else notify
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", address)
body = json.dumps({"pid": pid, "fp": fp}).encode()
while not stopping:
    if listener is None:
        time.sleep(0.05)
        continue
    readable, _, _ = select.select([listener], [], [], 0.05)
    if not readable:
        continue
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        continue
    with conn:
        conn.setblocking(True)
        conn.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            pass
say(f"exiting {pid}")
'''

VAR = "APP_SECRET"
#: file secrets are watched by file-system events; the poll is a safety net. It
#: also caps the retry delay of a rolled-back change (docs/rotation.md), and a retry
#: racing the test's own rotations would only blur what the tests look at.
INTERVAL = "5s"
STARTED = re.compile(r"^started (\d+) ([0-9a-f]{12}) (\d+)$", re.M)


class Run:
    """One ``envwrap --watch`` with a ``ref+file://`` secret, the child above, an audit log."""

    def __init__(self, tmp_path: Path, base_env: dict[str, str], value: str, *options: str,
                 env: dict[str, str] | None = None, secret_ref: str | None = None) -> None:
        # a folder of its own: file events of the audit log must not wake the watcher
        (tmp_path / "secrets").mkdir(exist_ok=True)
        self.secret = tmp_path / "secrets" / "secret"
        self.rotate(value)
        self.audit = tmp_path / "audit.jsonl"
        child = tmp_path / "child.py"
        child.write_text(CHILD)
        full_env = {**base_env, VAR: secret_ref or f"ref+file://{self.secret}",
                    "READY_DELAY": "0.1", **(env or {})}
        self.process = subprocess.Popen(
            [*envwrap_command(), "--no-env-file", "--log-level", "info",
             "--audit-log", str(self.audit), "--watch", "--interval", INTERVAL, *options,
             "--", sys.executable, str(child)],
            env=full_env, cwd=tmp_path, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.out = LineCollector(self.process.stdout)
        self.err = LineCollector(self.process.stderr)
        self.port = 0

    def rotate(self, value: str) -> None:
        staging = self.secret.with_name("secret.new")
        staging.write_text(value)
        os.replace(staging, self.secret)

    def started(self, value: str, timeout: float = 20) -> int:
        """The pid of the generation started with ``value``; remembers the port."""
        def found() -> int | None:
            for match in STARTED.finditer(self.out.text()):
                if match.group(2) == fp(value):
                    self.port = int(match.group(3)) or self.port
                    return int(match.group(1))
            assert self.process.poll() is None, f"envwrap exited:\n{self.err.text()}"
            return None

        try:
            pid = wait_until(found, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstdout:\n{self.out.text()}\nstderr:\n"
                                 f"{self.err.text()}") from None
        assert isinstance(pid, int)
        return pid

    def wait_line(self, line: str, timeout: float = 20) -> None:
        try:
            wait_until(lambda: line in self.out.text().splitlines(), timeout=timeout)
        except AssertionError:
            raise AssertionError(f"no line {line!r}\nstdout:\n{self.out.text()}\n"
                                 f"stderr:\n{self.err.text()}") from None

    def line_index(self, line: str) -> int:
        return self.out.text().splitlines().index(line)

    def events(self, event: str | None = None) -> list[dict[str, object]]:
        if not self.audit.exists():
            return []
        records = [json.loads(line) for line in self.audit.read_text().splitlines() if line]
        return [r for r in records if event is None or r["event"] == event]

    def wait_event(self, event: str, timeout: float = 20, **fields: object) -> dict[str, object]:
        def found() -> dict[str, object] | None:
            for record in self.events(event):
                if all(record.get(k) == v for k, v in fields.items()):
                    return record
            assert self.process.poll() is None, f"envwrap exited:\n{self.err.text()}"
            return None

        try:
            record = wait_until(found, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: no {event} {fields}\naudit:\n"
                                 f"{self.audit.read_text() if self.audit.exists() else ''}\n"
                                 f"stderr:\n{self.err.text()}") from None
        assert isinstance(record, dict)
        return record

    def get(self) -> tuple[int, str]:
        """One request to the shared socket: (pid, fp) of the generation that answered."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        answer = json.loads(data.partition(b"\r\n\r\n")[2])
        return int(answer["pid"]), str(answer["fp"])

    def stop(self) -> int:
        code = stop_process(self.process)
        self.out.join()
        self.err.join()
        return code

    def assert_clean(self, *values: str) -> None:
        audit = self.audit.read_text() if self.audit.exists() else ""
        for value in values:
            assert_not_leaked(value, self.err.text(), self.out.text(), audit)

    def kill_everything(self) -> None:
        """Teardown safety net: every process of this run's session (envwrap started it)."""
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getsid(int(name)) == self.process.pid:
                        os.kill(int(name), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


HANDOFF = ("--on-change", "handoff", "--ready", "notify", "--listen", "127.0.0.1:0")
