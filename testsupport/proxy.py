"""Loopback proxies for rotation tests and benchmarks.

* :class:`TcpProxy` -- a TCP relay that can be *cut* (every open connection is
  closed and new ones are refused, as when a store goes down) and *restored*
  on the same port; with ``tunnel=True`` an http:// proxy's ``CONNECT`` tunnel.
* :class:`CountingHttpProxy` -- an HTTP/1.1 relay that records every request
  (method, path without query, ``X-Amz-Target`` operation) with its time, to
  count what a client asks a store for.

Both are threads in the test (or benchmark) process; neither reads bodies
beyond what relaying needs, and neither logs anything.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CountingHttpProxy", "Request", "TcpProxy"]


class TcpProxy:
    """``127.0.0.1:port`` relayed to ``127.0.0.1:upstream_port``; cut() / restore().

    ``tunnel``: answer as an http:// proxy does to ``CONNECT`` (whatever the target,
    the tunnel goes to the upstream port) and keep each request's head, as sent,
    in :attr:`heads`.
    """

    def __init__(self, upstream_port: int, *, tunnel: bool = False) -> None:
        self.upstream_port = upstream_port
        self.tunnel = tunnel
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: cut() or close()
            try:
                head = _request_head(client) if self.tunnel else b""
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            if self.tunnel:
                self.heads.append(head)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._sockets -= {source, sink}

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        with self._lock:
            listener, self._listener = self._listener, None
            open_sockets, self._sockets = self._sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        with self._lock:
            if self._listener is not None:
                return
        deadline = time.monotonic() + 5
        while True:
            try:
                self._listen()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.cut()


def _request_head(client: socket.socket) -> bytes:
    """A request's line and headers, read up to the empty line (a CONNECT has no body)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = client.recv(4096)
        if not chunk:
            raise ConnectionResetError("the client left before its request's end")
        head += chunk
    return head


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic() on arrival
    method: str
    path: str  # without the query string
    operation: str  # X-Amz-Target's operation ("DescribeSecret"), else ""


class CountingHttpProxy:
    """An HTTP relay to ``upstream`` (``http://host:port``) that records every request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://").rstrip("/")
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without this, Nagle's
            # algorithm and the client's delayed ACK add 40 ms to a response
            disable_nagle_algorithm = True

            def _any(self) -> None:
                proxy._relay(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_PATCH = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _relay(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        target = handler.headers.get("X-Amz-Target", "")
        request = Request(time.monotonic(), handler.command, handler.path.split("?", 1)[0],
                          target.rpartition(".")[2])
        with self._lock:
            self.requests.append(request)
        if self.answer(handler, request):
            return
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            handler.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                    handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(data)
        finally:
            connection.close()

    def answer(self, handler: BaseHTTPRequestHandler, request: Request) -> bool:
        """Answer ``request`` here instead of relaying it; ``True`` if answered.

        The relay answers nothing itself; a subclass injects faults here.
        """
        return False

    @staticmethod
    def reply(
        handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def since(self, start: float = 0.0) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.at >= start]

    def counts(self, start: float = 0.0) -> Counter[tuple[str, str]]:
        """(method, path or operation) -> number of requests since ``start``."""
        return Counter((r.method, r.operation or r.path) for r in self.since(start))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
