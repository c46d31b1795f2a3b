"""The load generator the handoff tests, the demo and bench_downtime rely on.

Real sockets against tiny in-test servers: one per outcome it must tell apart.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from testsupport.helpers import wait_until
from testsupport.http_load import HttpLoad, Sample, reaped, request_once, summarize


class _Handler(BaseHTTPRequestHandler):
    status_code = 200
    pid = 4242

    def do_GET(self) -> None:
        body = json.dumps({"pid": self.pid, "path": self.path}).encode()
        self.send_response(self.status_code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def http_server(status_code: int = 200, pid: int = 4242) -> Iterator[int]:
    handler = type("H", (_Handler,), {"status_code": status_code, "pid": pid})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def resetting_server() -> Iterator[int]:
    """Accepts, reads the request, then closes with an RST (SO_LINGER 0)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.recv(4096)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def test_ok_answers_carry_the_server_pid() -> None:
    with http_server(pid=31337) as port:
        sample = request_once("127.0.0.1", port, "/healthz", timeout=5)
    assert sample.outcome == "ok"
    assert sample.pid == 31337
    assert sample.latency >= 0


def test_error_status_is_bad_status() -> None:
    with http_server(status_code=503) as port:
        assert request_once("127.0.0.1", port, "/", timeout=5).outcome == "bad_status"


def test_nothing_listening_is_refused() -> None:
    # Bound but not listening: the port stays ours, and a connect is refused.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        assert request_once("127.0.0.1", port, "/", timeout=5).outcome == "refused"


def test_a_backlog_nobody_accepts_is_a_timeout() -> None:
    # The kernel completes the handshake into the backlog; no answer ever comes.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        sample = request_once("127.0.0.1", port, "/", timeout=0.3)
    assert sample.outcome == "timeout"


def test_a_connection_reset_is_reset() -> None:
    with resetting_server() as port:
        assert request_once("127.0.0.1", port, "/", timeout=5).outcome == "reset"


def test_load_runs_until_stopped_and_counts_every_request() -> None:
    with http_server() as port, HttpLoad("127.0.0.1", port, connections=3, max_seconds=60) as load:
        assert load.wait_answers(30, timeout=30)
    samples = load.samples()
    assert not load.running
    assert len(samples) >= 30
    window = summarize(samples)
    assert window.failed == 0
    assert window.requests == len(samples)
    assert window.pids == (4242,)
    assert 0 < window.p50 <= window.p99
    assert window.longest_gap >= window.median_gap > 0


def test_load_stops_by_itself_at_its_time_bound() -> None:
    with http_server() as port:
        load = HttpLoad("127.0.0.1", port, connections=2, max_seconds=0.5)
        load.start()
        wait_until(lambda: not load.running, timeout=20)
        count = len(load.samples())
        time.sleep(0.2)  # not an oracle: shows that nothing is added after the stop
        assert len(load.samples()) == count


def test_load_stops_by_itself_at_its_request_bound() -> None:
    with http_server() as port:
        load = HttpLoad("127.0.0.1", port, connections=2, max_requests=25)
        load.start()
        wait_until(lambda: not load.running, timeout=20)
        assert len(load.samples()) == 25


def test_paced_load_stays_at_or_under_its_rate() -> None:
    with http_server() as port:
        load = HttpLoad("127.0.0.1", port, connections=2, rate=20, max_seconds=1.0)
        load.start()
        wait_until(lambda: not load.running, timeout=20)
    # 20/s for 1 s, plus the first request of each thread
    assert 1 <= len(load.samples()) <= 22


def test_load_against_a_dead_port_records_refusals() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        load = HttpLoad("127.0.0.1", holder.getsockname()[1], connections=1, max_requests=5)
        load.start()
        wait_until(lambda: not load.running, timeout=20)
    window = summarize(load.samples())
    assert window.failed == window.requests == 5
    assert window.outcomes == {"refused": 5}
    assert window.pids == ()


def test_arguments_are_bounded() -> None:
    with pytest.raises(ValueError, match="connections"):
        HttpLoad("127.0.0.1", 1, connections=0)
    with pytest.raises(ValueError, match="connections"):
        HttpLoad("127.0.0.1", 1, connections=1000)
    with pytest.raises(ValueError, match="rate"):
        HttpLoad("127.0.0.1", 1, rate=0)


# --- summarize: pure logic ------------------------------------------------------------------


def _ok(started: float, latency: float = 0.01, pid: int = 1) -> Sample:
    return Sample(started, latency, "ok", pid)


def test_summarize_window_counts_by_start_time() -> None:
    samples = [_ok(0.0), _ok(1.0), Sample(1.5, 0.001, "refused"), _ok(2.0), _ok(3.0)]
    window = summarize(samples, 1.0, 2.5)
    assert window.requests == 3
    assert window.failed == 1
    assert window.outcomes == {"ok": 2, "refused": 1}


def test_longest_gap_counts_a_silence_that_straddles_the_window() -> None:
    # answers end at 0.01, 0.11, 0.21 then nothing until 1.01: a 0.8 s silence
    samples = [_ok(0.0), _ok(0.1), _ok(0.2), _ok(1.0), _ok(1.1)]
    assert summarize(samples, 0.5, 0.6).longest_gap == pytest.approx(0.8)
    assert summarize(samples, 0.9, 2.0).longest_gap == pytest.approx(0.8)
    assert summarize(samples, 1.05, 2.0).longest_gap == pytest.approx(0.1)
    assert summarize(samples).median_gap == pytest.approx(0.1)


def test_pids_in_order_of_first_answer_and_latency_percentiles() -> None:
    samples = [_ok(t / 100, latency=0.001 * (t + 1), pid=1 if t < 50 else 2) for t in range(100)]
    window = summarize(samples)
    assert window.pids == (1, 2)
    assert window.p50 == pytest.approx(0.050, abs=0.0015)
    assert window.p99 == pytest.approx(0.099, abs=0.0015)


def test_summarize_of_nothing_is_zeros() -> None:
    window = summarize([])
    assert (window.requests, window.failed, window.longest_gap, window.p99) == (0, 0, 0.0, 0.0)


def test_reaped_only_once_the_process_is_gone_and_waited_for() -> None:
    import subprocess

    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert not reaped(proc.pid)
        proc.kill()
        wait_until(lambda: proc.poll() is not None, timeout=10)  # poll() reaps it
        assert reaped(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
