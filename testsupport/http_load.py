"""A small, bounded HTTP load generator for loopback services (tests, demo, benchmarks).

``HttpLoad`` runs a fixed number of client threads against one ``host:port``;
each thread sends one GET per fresh TCP connection (``Connection: close``) and
records a ``Sample`` per request: when it started, how long it took, its
outcome and, when the body says ``"pid": N``, which server process answered.
A fresh connection per request is deliberate: what a restart breaks is the
listening socket (refused connections) and the connections in flight (resets),
and a keep-alive client would hide the first behind its open connections.

It is bounded: at most ``max_seconds`` and ``max_requests``, after which the
threads stop by themselves, so a test that forgets to stop it does not leave
load running. ``summarize`` turns samples into the figures that matter during
a window of time: failed requests, the longest time without any answer, the
median time between answers, and latency percentiles.

    with HttpLoad("127.0.0.1", port, connections=4) as load:
        t0 = time.monotonic(); ...rotate...; t1 = time.monotonic()
    window = summarize(load.samples(), t0, t1)
    assert window.failed == 0
"""

from __future__ import annotations

import itertools
import math
import os
import re
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["HttpLoad", "Outcome", "Sample", "Window", "classify_error", "reaped", "summarize"]

#: ``ok``: a 2xx/3xx answer; ``refused``: nothing listening (ECONNREFUSED);
#: ``reset``: the connection was reset or closed before a full answer;
#: ``timeout``: no answer within the per-request timeout; ``bad_status``: an
#: answer >= 400 or not HTTP; ``error``: any other socket error.
Outcome = Literal["ok", "refused", "reset", "timeout", "bad_status", "error"]

_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")
_PID = re.compile(rb'"pid"\s*:\s*(\d+)')
_MAX_CONNECTIONS = 64
_MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class Sample:
    """One request. Times are ``time.monotonic()`` seconds."""

    started: float
    latency: float
    outcome: Outcome
    pid: int | None = None

    @property
    def ended(self) -> float:
        return self.started + self.latency


@dataclass(frozen=True, slots=True)
class Window:
    """What the clients saw during ``[start, end)`` (requests by their start time)."""

    requests: int
    failed: int
    outcomes: dict[str, int]
    #: the longest time between two successive answers (any request) that
    #: overlaps the window; 0.0 when fewer than two answers bracket it
    longest_gap: float
    #: the median time between successive answers inside the window
    median_gap: float
    p50: float
    p99: float
    #: server PIDs that answered, in order of their first answer
    pids: tuple[int, ...]


def classify_error(error: BaseException) -> Outcome:
    """The outcome for an exception raised by a request."""
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(error, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return "timeout"
    return "error"


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarize(samples: Iterable[Sample], start: float | None = None,
              end: float | None = None) -> Window:
    """Figures for the requests started in ``[start, end)`` (all when None).

    The longest gap looks at every answer, not only those of the window, so
    that a silence that began just before the window or ended just after it is
    counted whole.
    """
    every = sorted(samples, key=lambda s: s.started)
    lo = float("-inf") if start is None else start
    hi = float("inf") if end is None else end
    inside = [s for s in every if lo <= s.started < hi]
    ok = [s for s in inside if s.outcome == "ok"]
    answers = sorted(s.ended for s in every if s.outcome == "ok")
    longest = 0.0
    for earlier, later in itertools.pairwise(answers):
        if earlier < hi and later > lo:
            longest = max(longest, later - earlier)
    own = [t for t in answers if lo <= t < hi]
    gaps = [b - a for a, b in itertools.pairwise(own)]
    latencies = sorted(s.latency for s in ok)
    pids: dict[int, None] = {}
    for s in sorted(ok, key=lambda s: s.ended):
        if s.pid is not None:
            pids.setdefault(s.pid, None)
    outcomes: Counter[str] = Counter(s.outcome for s in inside)
    return Window(
        requests=len(inside),
        failed=len(inside) - len(ok),
        outcomes=dict(outcomes),
        longest_gap=longest,
        median_gap=statistics.median(gaps) if gaps else 0.0,
        p50=_percentile(latencies, 0.50),
        p99=_percentile(latencies, 0.99),
        pids=tuple(pids),
    )


def reaped(pid: int) -> bool:
    """Whether the server process ``pid`` (one an answer named) has exited and been reaped.

    For waiting out an old generation: as root, or as its owner, ``kill(pid, 0)``
    fails with ESRCH only once no process has that PID, not even a zombie.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def request_once(host: str, port: int, path: str, timeout: float) -> Sample:
    """One GET on a fresh connection, read to the server's close."""
    started = time.monotonic()
    outcome: Outcome
    pid: int | None = None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                         .encode())
            chunks: list[bytes] = []
            size = 0
            while size < _MAX_BODY:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        data = b"".join(chunks)
        status = _STATUS.match(data)
        _head, sep, body = data.partition(b"\r\n\r\n")
        if status is None:
            # The peer closed before a status line: what a client sees from a
            # server that died with the connection accepted.
            outcome = "reset" if not data else "bad_status"
        elif int(status.group(1)) >= 400:
            outcome = "bad_status"
        elif not sep:
            outcome = "reset"
        else:
            outcome = "ok"
            found = _PID.search(body)
            pid = int(found.group(1)) if found else None
    except OSError as error:
        outcome = classify_error(error)
    return Sample(started, time.monotonic() - started, outcome, pid)


class HttpLoad:
    """``connections`` threads sending GETs until stopped or a bound is hit.

    ``rate`` (requests per second over all threads) paces the load; ``None``
    sends the next request as soon as the previous one ended (closed loop).
    """

    def __init__(self, host: str, port: int, path: str = "/", *, connections: int = 4,
                 rate: float | None = None, timeout: float = 5.0, max_seconds: float = 120.0,
                 max_requests: int = 1_000_000) -> None:
        if not 1 <= connections <= _MAX_CONNECTIONS:
            raise ValueError(f"connections must be 1..{_MAX_CONNECTIONS}, not {connections}")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.host, self.port, self.path = host, port, path
        self.connections = connections
        self.rate = rate
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._answered = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> HttpLoad:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("HttpLoad already started")
        deadline = time.monotonic() + self.max_seconds
        for index in range(self.connections):
            thread = threading.Thread(target=self._run, args=(index, deadline),
                                      name=f"http-load-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> list[Sample]:
        """Stop sending, wait for the requests in flight, return every sample."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5.0)
        return self.samples()

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def wait_answers(self, count: int, timeout: float, since: float | None = None) -> bool:
        """Block until ``count`` ok answers to requests started at or after ``since``."""
        floor = float("-inf") if since is None else since
        deadline = time.monotonic() + timeout
        with self._answered:
            while True:
                done = sum(1 for s in self._samples if s.outcome == "ok" and s.started >= floor)
                left = deadline - time.monotonic()
                if done >= count:
                    return True
                if left <= 0 or (not self.running and self._threads):
                    return False
                self._answered.wait(min(left, 0.5))

    def _run(self, index: int, deadline: float) -> None:
        period = self.connections / self.rate if self.rate else 0.0
        # Spread the paced threads over one period so that they do not fire together.
        next_at = time.monotonic() + period * index / self.connections
        while not self._stop.is_set() and time.monotonic() < deadline:
            if period:
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                # Behind schedule (a slow answer): skip the missed slots, no catch-up
                # burst, and keep this thread's phase, so that threads delayed by the
                # same stall do not end up firing together.
                next_at += period
                behind = time.monotonic() - next_at
                if behind > 0:
                    next_at += period * math.ceil(behind / period)
            sample = request_once(self.host, self.port, self.path, self.timeout)
            with self._answered:
                if len(self._samples) >= self.max_requests:
                    break
                self._samples.append(sample)
                self._answered.notify_all()
