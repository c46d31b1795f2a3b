"""``--metrics ADDR``: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

One daemon thread runs a ``selectors`` event loop: it accepts, reads each
request with a total deadline counted from the accept (whatever a client
drips), answers with non-blocking writes, and holds at most
:data:`MAX_CONNECTIONS` connections (a new one evicts the oldest), so a
thousand slow clients cost envwrap one thread and a bounded number of sockets,
and the kubelet's probes still get through. A bad client costs one debug log
line, never a traceback. The loop sleeps in ``select`` when nothing happens.

It serves what :class:`envwrap.telemetry.metrics.Metrics` derives from events;
``prometheus_client`` only formats ``/metrics``, and is imported here, i.e. only
with ``--metrics``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import threading
import time
from collections import OrderedDict

from envwrap import log
from envwrap.errors import ConfigError
from envwrap.telemetry import events
from envwrap.telemetry.metrics import Metrics
from envwrap.values import parse_host_port

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


__all__ = ["MetricsServer", "parse_address", "start_metrics"]

JSON = "application/json"
MAX_LINE = 8192
MAX_HEADERS = 100
#: the whole request (line and headers) may not be longer than this
MAX_REQUEST = MAX_LINE * 4
#: from accept to the last byte of the answer: a client that sends nothing, or
#: drips a byte at a time, is cut off after this many seconds
DEADLINE = 5.0
#: open connections at most; one more evicts the oldest (a probe is answered in
#: a millisecond, so only slow clients are ever old)
MAX_CONNECTIONS = 256
#: the kernel's queue of connections not accepted yet
BACKLOG = max(128, socket.SOMAXCONN)
#: when the process is out of file descriptors and there is no connection to
#: evict, stop accepting for this long instead of spinning on the listen socket
ACCEPT_PAUSE = 0.1
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


def parse_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:9102``, ``:9102`` (every interface), ``[::1]:9102`` -> (host, port).

    Raises :class:`ConfigError` (78) naming the option.
    """
    try:
        host, port = parse_host_port(text, "--metrics")
    except ConfigError as err:
        raise ConfigError(
            f"{err.message} (examples: 127.0.0.1:9102, :9102, [::1]:9102)"
        ) from None
    return host or "0.0.0.0", port  # noqa: S104 -- ":PORT" asks for every interface


class _Connection:
    """One client: what it sent so far, what is left to write, its deadline."""

    __slots__ = ("deadline", "inbox", "outbox", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: object, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.deadline = deadline
        self.inbox = b""
        self.outbox = b""


def _request_complete(data: bytes) -> bool:
    """True once the headers end (a blank line after the request line); a
    search in C, so a client dripping a byte at a time costs little."""
    return b"\n\n" in data or b"\n\r\n" in data


def _respond(metrics: Metrics, rendered: list[tuple[int, bytes]], request: bytes) -> bytes:
    """The whole answer (status line, headers, body) to one request's bytes."""
    lines = request.split(b"\n")
    parts = lines[0].split()
    if (len(lines[0]) > MAX_LINE or len(lines) > MAX_HEADERS + 2 or len(parts) != 3
            or not parts[2].startswith(b"HTTP/")):
        return _reply(400, b'{"status": "bad request"}\n', JSON, head=False)
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return _reply(405, b'{"status": "method not allowed"}\n', JSON, head=False)
    head = method == b"HEAD"
    if target == b"/metrics":
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        return _reply(200, _exposition(metrics, rendered), CONTENT_TYPE_LATEST, head)
    if target in (b"/healthz", b"/readyz"):
        reason = metrics.not_alive() if target == b"/healthz" else metrics.not_ready()
        body = {"status": "ok"} if reason is None else {"status": "fail", "reason": reason}
        data = (json.dumps(body) + "\n").encode()
        return _reply(200 if reason is None else 503, data, JSON, head)
    return _reply(404, b'{"status": "not found"}\n', JSON, head)


def _exposition(metrics: Metrics, rendered: list[tuple[int, bytes]]) -> bytes:
    """The /metrics body; an idle envwrap (no event since the last scrape)
    answers from ``rendered`` (the state version and the body) without re-rendering."""
    version, data = rendered[0]
    if version != metrics.version:
        from prometheus_client.exposition import generate_latest

        version = metrics.version  # read first: a later event re-renders next time
        data = generate_latest(_Registry(metrics))  # type: ignore[arg-type]
        rendered[0] = (version, data)
    return data


def _reply(status: int, data: bytes, content_type: str, head: bool) -> bytes:
    header = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return header if head else header + data


class _Registry:
    """What ``generate_latest`` needs of a registry: ``collect()``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Any:
        return self.metrics.collect()


class _EventLoop:
    """The listening socket and every open connection, served by :meth:`run`.

    :attr:`server_address` is the bound (host, port, ...).
    """

    def __init__(self, listener: socket.socket, metrics: Metrics) -> None:
        self.listener = listener
        self.server_address = listener.getsockname()
        self.metrics = metrics
        self.rendered: list[tuple[int, bytes]] = [(-1, b"")]
        #: by accept time, so the first is the oldest and the next to expire
        self.connections: OrderedDict[socket.socket, _Connection] = OrderedDict()
        self.selector = selectors.DefaultSelector()
        # close() writes a byte here to wake the loop up; no periodic wake-up
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._stopping = False
        self._accept_paused_until = 0.0

    def run(self) -> None:
        self.selector.register(self._wake_reader, selectors.EVENT_READ)
        self.selector.register(self.listener, selectors.EVENT_READ)
        try:
            while not self._stopping:
                try:
                    self._turn()
                except Exception as exc:  # the server must outlive any bug of its own
                    log.warning("metrics server: unexpected error", error=repr(exc))
        finally:
            for sock in list(self.connections):
                self._drop(sock)
            self.selector.close()
            self._wake_reader.close()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # already woken and closed
            self._wake_writer.send(b"x")

    def close(self) -> None:
        self._wake_writer.close()
        self._wake_reader.close()  # again if run() did: harmless
        self.listener.close()

    def _turn(self) -> None:
        now = time.monotonic()
        timeout: float | None = None
        if self.connections:
            oldest = next(iter(self.connections.values()))
            timeout = max(0.0, oldest.deadline - now)
        if self._accept_paused_until:
            pause = max(0.0, self._accept_paused_until - now)
            timeout = pause if timeout is None else min(timeout, pause)
        for key, mask in self.selector.select(timeout):
            sock = key.fileobj
            if sock is self._wake_reader:
                return
            if sock is self.listener:
                self._accept()
            elif isinstance(sock, socket.socket) and sock in self.connections:
                if mask & selectors.EVENT_READ:
                    self._read(self.connections[sock])
                elif mask & selectors.EVENT_WRITE:
                    self._write(self.connections[sock])
        now = time.monotonic()
        while self.connections:
            oldest = next(iter(self.connections.values()))
            if oldest.deadline > now:
                break
            log.debug("metrics: client too slow, closed", peer=str(oldest.peer))
            self._drop(oldest.sock)
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self.selector.register(self.listener, selectors.EVENT_READ)

    def _accept(self) -> None:
        # a few at a time: a burst of probes is served without starving the
        # connections already open
        for _ in range(64):
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if self.connections:
                        self._evict_oldest("out of file descriptors")
                        continue
                    log.info("metrics: cannot accept", error=exc.strerror or str(exc))
                    self.selector.unregister(self.listener)
                    self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                return  # ECONNABORTED and the like: the client is gone already
            if len(self.connections) >= MAX_CONNECTIONS:
                self._evict_oldest("too many connections")
            sock.setblocking(False)
            connection = _Connection(sock, peer, time.monotonic() + DEADLINE)
            self.connections[sock] = connection
            self.selector.register(sock, selectors.EVENT_READ)

    def _evict_oldest(self, why: str) -> None:
        oldest = next(iter(self.connections.values()))
        log.debug(f"metrics: {why}, closed the oldest", peer=str(oldest.peer))
        self._drop(oldest.sock)

    def _read(self, connection: _Connection) -> None:
        try:
            chunk = connection.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._drop(connection.sock)
            return
        connection.inbox += chunk
        if chunk and len(connection.inbox) <= MAX_REQUEST and not _request_complete(
            connection.inbox
        ):
            return
        if not chunk and not connection.inbox:  # connected and left without a word
            self._drop(connection.sock)
            return
        if len(connection.inbox) > MAX_REQUEST:
            log.debug("metrics: request too long", peer=str(connection.peer))
            connection.outbox = _reply(400, b'{"status": "bad request"}\n', JSON, head=False)
        else:
            connection.outbox = _respond(self.metrics, self.rendered, connection.inbox)
        connection.inbox = b""
        self.selector.modify(connection.sock, selectors.EVENT_WRITE)
        self._write(connection)

    def _write(self, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.outbox)
        except BlockingIOError:
            return
        except OSError:  # the client went away
            self._drop(connection.sock)
            return
        connection.outbox = connection.outbox[sent:]
        if not connection.outbox:
            self._drop(connection.sock)

    def _drop(self, sock: socket.socket) -> None:
        self.connections.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):  # not registered (any more)
            self.selector.unregister(sock)
        sock.close()


class MetricsServer:
    """The HTTP server thread; :attr:`address` is where it listens."""

    def __init__(self, address: str, metrics: Metrics) -> None:
        host, port = parse_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(BACKLOG)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise ConfigError(
                f"--metrics {address}: cannot listen ({exc.strerror or exc})",
                hint="choose a free port, or another address",
            ) from None
        self.server = _EventLoop(listener, metrics)
        self.metrics = metrics
        bound_host, bound_port = self.server.server_address[:2]
        shown = str(bound_host)
        self.address = f"[{shown}]:{bound_port}" if ":" in shown else f"{shown}:{bound_port}"
        self._thread = threading.Thread(
            target=self.server.run, name="envwrap-metrics", daemon=True,
        )

    def start(self) -> None:
        # Started before the supervisor blocks the signals it takes with
        # sigwaitinfo: a thread that does not block them could be picked by the
        # kernel for a process-directed SIGTERM and die of its default action.
        # The thread blocks them all.
        import signal

        previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        log.info("serving /metrics, /healthz and /readyz", address=self.address)

    def close(self) -> None:
        """Stop serving (at once: the loop is woken up) and close the socket; envwrap
        itself just exits, the thread is a daemon."""
        if self._thread.is_alive():
            self.server.stop()
            self._thread.join(timeout=2)
        self.server.close()


def start_metrics(address: str, *, needs_child: bool) -> MetricsServer:
    """Bind ``--metrics`` (exit 78 on failure), subscribe the metrics to events, serve.

    ``needs_child``: /readyz waits for a program (run, not sidecar).
    """
    try:
        import prometheus_client  # noqa: F401 -- fail early, with the fix
    except ImportError:
        raise ConfigError(
            "--metrics needs prometheus_client", hint="pip install 'envwrap-secrets[metrics]'"
        ) from None
    metrics = Metrics(needs_child=needs_child)
    server = MetricsServer(address, metrics)
    events.add_sink(metrics)
    server.start()
    return server
