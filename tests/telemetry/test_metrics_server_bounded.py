"""``--metrics`` under hostile clients: the real ``envwrap --init --metrics`` process.

A slowloris of hundreds of connections costs envwrap no thread and does not
stop the probes; a silent or dripping client is cut off by the total deadline;
garbage gets 400; nothing of it prints a traceback.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from envwrap.telemetry.server import DEADLINE, MAX_REQUEST
from testsupport import envwrap_command
from testsupport.fixtures_vault import free_port
from testsupport.helpers import LineCollector, wait_until

ROOT = Path(__file__).resolve().parents[2]
SLOW_CLIENTS = 300
#: envwrap's threads may not grow with clients; a few for the supervisor's own use
THREAD_BOUND = 8


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


def healthz(port: int, timeout: float = 2.0) -> tuple[int, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as reply:
            status = reply.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.monotonic() - started


def ask(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def closed_after(conn: socket.socket, drip: bool, limit: float) -> float:
    """Seconds until the server closes ``conn``; sends a byte every 0.5 s if ``drip``."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        readable, _, _ = select.select([conn], [], [], 0.5)
        if readable:
            try:
                if conn.recv(4096) == b"":
                    return time.monotonic() - started
            except ConnectionResetError:
                return time.monotonic() - started
        elif drip:
            try:
                conn.send(b"G")
            except OSError:
                return time.monotonic() - started
    raise AssertionError(f"the connection is still open after {limit} s")


class Envwrap:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        assert process.stderr is not None
        self.stderr = LineCollector(process.stderr)


@pytest.fixture
def envwrap(tmp_path: Path, base_env: dict[str, str]) -> Iterator[Envwrap]:
    port = free_port()
    process = subprocess.Popen(
        [*envwrap_command(), "--no-env-file", "--init", "--metrics", f"127.0.0.1:{port}",
         "--", "sleep", "300"],
        env=base_env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    one = Envwrap(process, port)
    try:
        wait_until(lambda: _up(port), timeout=20)
        yield one
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _up(port: int) -> bool:
    try:
        return healthz(port)[0] == 200
    except OSError:
        return False


def slowloris(port: int, count: int) -> list[socket.socket]:
    conns = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=2)
        conn.setblocking(False)
        conns.append(conn)
    return conns


def drip(conns: list[socket.socket]) -> None:
    for conn in conns:
        with contextlib.suppress(OSError):  # cut off already: the deadline at work
            conn.send(b"G")


def test_a_slowloris_costs_no_thread_and_the_probes_get_through(envwrap: Envwrap) -> None:
    pid = envwrap.process.pid
    before = threads(pid)
    conns = slowloris(envwrap.port, SLOW_CLIENTS)
    try:
        seen = []
        for _ in range(4):  # a byte a second on each, for four seconds
            drip(conns)
            seen.append(threads(pid))
            status, took = healthz(envwrap.port)
            assert status == 200 and took < 2.0
            time.sleep(1)
        assert max(seen) <= max(before, THREAD_BOUND), (before, seen)
    finally:
        for conn in conns:
            conn.close()
    assert healthz(envwrap.port)[0] == 200
    assert envwrap.process.poll() is None
    text = envwrap.stderr.text()
    assert "Traceback" not in text
    assert len(text.splitlines()) < 10  # no line per client at the default level


def test_a_silent_or_dripping_client_is_cut_off_by_the_deadline(envwrap: Envwrap) -> None:
    with socket.create_connection(("127.0.0.1", envwrap.port), timeout=5) as silent:
        took = closed_after(silent, drip=False, limit=DEADLINE + 3)
    assert DEADLINE - 0.5 <= took <= DEADLINE + 1.5
    with socket.create_connection(("127.0.0.1", envwrap.port), timeout=5) as dripping:
        took = closed_after(dripping, drip=True, limit=DEADLINE + 3)
    assert DEADLINE - 0.5 <= took <= DEADLINE + 1.5
    assert healthz(envwrap.port)[0] == 200
    assert "Traceback" not in envwrap.stderr.text()


def test_garbage_gets_400_and_the_server_goes_on(envwrap: Envwrap) -> None:
    for request in (b"garbage\r\n\r\n", b"\x00\xff\xfe\r\n\r\n", b"GET /healthz\r\n\r\n",
                    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
                    b"GET /" + b"a" * (MAX_REQUEST + 10) + b" HTTP/1.1\r\n\r\n"):
        assert ask(envwrap.port, request).startswith(b"HTTP/1.1 400 "), request[:40]
    with socket.create_connection(("127.0.0.1", envwrap.port), timeout=5):
        pass  # connects and leaves without a word
    assert ask(envwrap.port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    assert envwrap.process.poll() is None
    assert "Traceback" not in envwrap.stderr.text()
