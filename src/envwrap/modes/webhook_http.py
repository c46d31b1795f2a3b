"""A small HTTPS/1.1 server for the admission webhook: bounded, with deadlines.

Hand-written on :mod:`socket` and :mod:`ssl` rather than :mod:`http.server`
because the webhook must stay up whatever its clients do: every request has a
total deadline (a client that sends one byte a second is cut off, not waited
for byte by byte), a bounded number of connections is served at once (further
ones wait in the kernel's backlog), the TLS handshake happens in a worker and
not in the accepting thread, and a bad client costs one debug line, never a
traceback. Only what the API server sends is supported: requests with a
``Content-Length`` body, keep-alive connections.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import ssl
import threading
import time

from envwrap import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from envwrap.modes.webhook_tls import Certificates

    #: (method, path, body) -> (status, content type, body)
    Handler = Callable[[str, str, bytes], tuple[int, str, bytes]]

__all__ = ["HttpsServer", "Limits"]

REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
}


class Limits:
    """How much one client may take."""

    __slots__ = ("deadline", "handshake", "idle", "max_body", "max_header", "workers")

    def __init__(
        self,
        *,
        workers: int = 64,
        deadline: float = 10.0,
        handshake: float = 5.0,
        idle: float = 15.0,
        max_header: int = 16 * 1024,
        max_body: int = 8 * 2**20,
    ) -> None:
        #: connections served at once; more wait in the listen backlog
        self.workers = workers
        #: from a request's first byte to the end of its response
        self.deadline = deadline
        self.handshake = handshake
        #: how long a kept-alive connection may wait for its next request
        self.idle = idle
        self.max_header = max_header
        #: the API server caps objects at ~3 MiB; an AdmissionReview is larger than its pod
        self.max_body = max_body


class _ClientError(Exception):
    """The client sent something that is not HTTP we serve: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Request:
    __slots__ = ("body", "keep_alive", "method", "path")

    def __init__(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.body = body
        self.keep_alive = keep_alive


class HttpsServer:
    """Serves ``handler`` over TLS on ``host:port`` until :meth:`stop`."""

    def __init__(
        self, host: str, port: int, certificates: Certificates, handler: Handler,
        limits: Limits | None = None,
    ) -> None:
        self.certificates = certificates
        self.handler = handler
        self.limits = limits or Limits()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if not host:  # ":PORT": every interface, IPv4 and IPv6 where the system has it
            family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
            host = "::" if family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104 -- asked for
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            self._listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self._listener.bind((host, port))
        self._listener.listen(1024)
        self._listener.setblocking(False)
        self._slots = threading.BoundedSemaphore(self.limits.workers)
        self._queue: queue.SimpleQueue[socket.socket | None] = queue.SimpleQueue()
        #: open connections -> whether a request is being served on it
        self._open: dict[socket.socket, bool] = {}
        self._open_lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        self._stopping = threading.Event()
        # Daemon workers: a client holding a connection can never hold up envwrap's exit.
        self._workers = [
            threading.Thread(target=self._work, name=f"webhook-{n}", daemon=True)
            for n in range(self.limits.workers)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def serve(self) -> None:
        """Accept connections until :meth:`stop`; each is served by a pool worker."""
        try:
            while not self._stopping.is_set():
                # A free worker first: with all busy, new clients queue in the backlog.
                while not self._slots.acquire(timeout=0.05):
                    if self._stopping.is_set():
                        return
                    if select.select([self._listener.fileno()], [], [], 0)[0]:
                        self._shed_idle()
                readable, _, _ = select.select([self._listener.fileno(), self._wake_read], [], [])
                if self._wake_read in readable:
                    self._slots.release()
                    return
                self._accept_pending()
        finally:
            self._listener.close()

    def _shed_idle(self) -> None:
        """Every worker is taken and a client waits: close kept-alive connections
        that wait for their next request, so that idle clients cannot starve new ones."""
        with self._open_lock:
            idle = [conn for conn, busy in self._open.items() if not busy]
        for conn in idle:
            _shut(conn)

    def _accept_pending(self) -> None:
        """Accept every connection waiting, as long as workers are free (one slot is held).

        Draining the backlog in one go matters under load: each wake-up of this
        thread costs a turn at the GIL among busy workers, and a backlog that
        overflows makes clients retry their SYN a second later.
        """
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # nothing left (BlockingIOError), or the client gave up
                self._slots.release()
                return
            self._queue.put(conn)
            if not self._slots.acquire(blocking=False):
                return

    def stop(self, grace: float) -> None:
        """Stop accepting, let the requests in flight finish (at most ``grace`` seconds).

        Connections waiting for their next request are closed at once; the API
        server opens a new one for its next call.
        """
        self._stopping.set()
        os.write(self._wake_write, b"x")
        end = time.monotonic() + grace
        while True:
            with self._open_lock:
                idle = [conn for conn, busy in self._open.items() if not busy]
                busy_left = any(self._open.values())
            for conn in idle:
                _shut(conn)
            if not busy_left or time.monotonic() >= end:
                break
            time.sleep(0.02)
        for _ in self._workers:
            self._queue.put(None)

    def _work(self) -> None:
        while (conn := self._queue.get()) is not None:
            self._serve_connection(conn)

    def _mark(self, conn: socket.socket, busy: bool | None) -> None:
        with self._open_lock:
            if busy is None:
                self._open.pop(conn, None)
            else:
                self._open[conn] = busy

    def _serve_connection(self, raw: socket.socket) -> None:
        conn: socket.socket = raw
        peer = "?"
        try:
            peer = str(raw.getpeername()[0])
            raw.settimeout(self.limits.handshake)
            # Small writes (handshake tickets, a response) go out at once, not after
            # the peer's delayed ACK (40 ms); Go's clients, the API server's, do the same.
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._mark(raw, True)
            conn = self.certificates.context().wrap_socket(raw, server_side=True)
            # wrap_socket took raw's descriptor: from here on conn is the live socket
            self._mark(raw, None)
            self._mark(conn, True)
            buffer = bytearray()
            while not self._stopping.is_set():
                self._mark(conn, bool(buffer))
                try:
                    request = self._read_request(conn, buffer)
                except _ClientError as exc:
                    log.debug(f"webhook: bad request from {peer}: {exc}")
                    self._send(conn, exc.status, "text/plain", f"{exc}\n".encode(), keep=False,
                               deadline=time.monotonic() + self.limits.handshake)
                    return
                if request is None:
                    return
                deadline = time.monotonic() + self.limits.deadline
                status, content_type, body = self.handler(request.method, request.path,
                                                          request.body)
                keep = request.keep_alive and not self._stopping.is_set()
                self._send(conn, status, content_type, body, keep=keep, deadline=deadline)
                if not keep:
                    return
        except (OSError, ssl.SSLError, ValueError) as exc:
            # resets, timeouts, failed handshakes: the client's problem, not ours
            log.debug(f"webhook: connection from {peer} ended: {type(exc).__name__}")
        except Exception as exc:
            log.error(f"webhook: internal error serving {peer} ({type(exc).__name__})")
        finally:
            self._mark(raw, None)
            self._mark(conn, None)
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()

    def _read_request(self, conn: socket.socket, buffer: bytearray) -> _Request | None:
        """The next request on ``conn``; ``None`` when the client closed between requests."""
        limits = self.limits
        deadline: float | None = None
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > limits.max_header:
                raise _ClientError(431, "request header too large")
            if deadline is None and buffer:
                deadline = time.monotonic() + limits.deadline
            chunk = self._recv(conn, deadline if deadline is not None
                               else time.monotonic() + limits.idle)
            if not chunk:
                if buffer:
                    raise _ClientError(400, "connection closed mid-request")
                return None
            if deadline is None:
                deadline = time.monotonic() + limits.deadline
                self._mark(conn, True)
            buffer += chunk
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        words = lines[0].split(" ")
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            raise _ClientError(400, "not an HTTP/1.x request line")
        method, target, version = words
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise _ClientError(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _ClientError(411, "send a Content-Length, not a chunked body")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _ClientError(400, "bad Content-Length")
        length = int(length_text)
        if length > limits.max_body:
            raise _ClientError(413, f"body over {limits.max_body} bytes")
        body = bytearray(rest)
        assert deadline is not None
        while len(body) < length:
            chunk = self._recv(conn, deadline)
            if not chunk:
                raise _ClientError(400, "connection closed mid-body")
            body += chunk
        buffer[:] = body[length:]  # the start of a pipelined next request, if any
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        return _Request(method, target.partition("?")[0], bytes(body[:length]), keep_alive)

    @staticmethod
    def _recv(conn: socket.socket, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        conn.settimeout(remaining)
        return conn.recv(65536)

    @staticmethod
    def _send(
        conn: socket.socket, status: int, content_type: str, body: bytes, *, keep: bool,
        deadline: float,
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        )
        conn.settimeout(max(0.001, deadline - time.monotonic()))
        conn.sendall(head.encode("latin-1") + body)


def _shut(conn: socket.socket) -> None:
    """Wake a thread blocked reading ``conn``: its read returns end of file."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
