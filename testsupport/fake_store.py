"""Fake stores on loopback that misbehave on purpose, and a listener that records.

``FakeStore`` is a threaded HTTP/1.1 server whose replies a test scripts per
request path: a redirect elsewhere, a body that drips a byte at a time, a body of
200 MB, a connection accepted and never answered, a reply that is not the
store's. Every request it receives is kept (method, path, headers, body), so a
test can check what envwrap sent -- and, on a second ``FakeStore`` used as the
target of a redirect, that nothing arrived at all.

``fake_store`` and ``redirect_target`` are the fixtures (``tests/conftest.py``
registers this module). ``vault_kv2`` answers a Vault KV v2 mount ``secret/``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

__all__ = [
    "FakeStore", "Reply", "Seen", "drip", "hang", "huge", "kv2_secret", "raw", "redirect", "reply",
    "vault_kv2",
]

#: a reply: given the request handler, write the whole response
Reply = Callable[["_Handler"], None]


class Seen(NamedTuple):
    """One request as the fake store received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeStore:
    """A threaded HTTP/1.1 server on ``host`` (a free port) answering as scripted.

    ``routes[(METHOD, PATH)]`` (the path without its query) or ``routes[(METHOD,
    "*")]`` answers a request; anything else is a 404. ``seen`` lists every
    request, in order. :meth:`close` releases replies that wait (``hang``,
    ``drip``) and stops the server.
    """

    def __init__(self, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None) -> None:
        self.routes: dict[tuple[str, str], Reply] = {}
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"store": self})
        self.httpd = http.server.ThreadingHTTPServer((host, 0), handler)
        self.httpd.daemon_threads = True
        if tls is not None:  # (certificate, key): serve https
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, method: str, path: str, reply_with: Reply) -> None:
        self.routes[(method, path)] = reply_with

    def received(self, method: str | None = None) -> list[Seen]:
        return [seen for seen in self.seen if method in (None, seen.method)]

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: FakeStore

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        self.store.seen.append(Seen(self.command, path, dict(self.headers), body))
        route = self.store.routes.get((self.command, path)) or self.store.routes.get(
            (self.command, "*"))
        with contextlib.suppress(OSError):  # the client may give up: that is the point
            (route or reply(404, {"errors": []}))(self)

    do_GET = do_POST = do_PUT = _any


def reply(status: int, document: object, **headers: str) -> Reply:
    """A JSON reply."""
    return raw(status, json.dumps(document).encode(), **headers)


def raw(status: int, body: bytes, content_type: str = "application/json",
        **headers: str) -> Reply:
    """A reply of exactly these bytes."""

    def send(handler: _Handler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)

    return send


def redirect(location: str, status: int = 307) -> Reply:
    """A redirect to ``location`` (absolute or relative)."""
    return raw(status, b"", Location=location)


def drip(every: float = 0.3, length: int = 10_000) -> Reply:
    """A 200 whose body of ``length`` bytes comes one byte each ``every`` seconds:
    each read gets data well within any read timeout, and the body never ends."""

    def send(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.write(b"{")
        handler.wfile.flush()
        for _ in range(length - 1):
            if handler.store.stopping.wait(every):
                return
            handler.wfile.write(b" ")
            handler.wfile.flush()

    return send


def huge(size: int, declare_length: bool = True) -> Reply:
    """A 200 whose body is ``size`` bytes of JSON-ish text, sent as fast as it goes;
    with ``declare_length=False`` it is chunked, so only reading tells its size."""
    chunk = b" " * (1024 * 1024)

    def send(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if declare_length:
            handler.send_header("Content-Length", str(size))
        else:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        sent = 0
        while sent < size and not handler.store.stopping.is_set():
            piece = chunk[: size - sent]
            if declare_length:
                handler.wfile.write(piece)
            else:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        if not declare_length:
            handler.wfile.write(b"0\r\n\r\n")

    return send


def hang(handler: _Handler) -> None:
    """Accept the request and never answer (until the store closes)."""
    handler.store.stopping.wait()
    handler.close_connection = True


def vault_kv2(store: FakeStore, secrets: dict[str, Reply], prefix: str = "") -> None:
    """Answer as Vault with a KV v2 mount ``secret/``: ``secrets[NAME]`` answers
    ``GET PREFIX/v1/secret/data/NAME``; see :func:`kv2_secret` for a well-formed one.
    ``prefix``: what precedes ``/v1`` in the request target -- the whole origin
    (``http://HOST:PORT``) when the store is reached as an http:// proxy."""
    for name, answer in secrets.items():
        store.answer("GET", f"{prefix}/v1/sys/internal/ui/mounts/secret/{name}", _mount_reply)
        store.answer("GET", f"{prefix}/v1/secret/data/{name}", answer)


def kv2_secret(data: dict[str, Any], version: object = 1, **metadata: object) -> Reply:
    """A KV v2 read as Vault answers it; ``version`` and ``metadata`` as given."""
    return reply(200, {"data": {"data": data, "metadata": {"version": version, **metadata}},
                       "lease_id": "", "renewable": False, "lease_duration": 0})


_mount_reply = reply(200, {"data": {"path": "secret/", "type": "kv",
                                    "options": {"version": "2"}}})


@pytest.fixture
def fake_store() -> Iterator[FakeStore]:
    store = FakeStore()
    yield store
    store.close()


@pytest.fixture
def redirect_target() -> Iterator[FakeStore]:
    """A second listener, on another loopback address (127.0.0.2): the place a
    redirect points at; it answers 200 ``{}`` to anything and records it."""
    store = FakeStore("127.0.0.2")
    for method in ("GET", "POST", "PUT"):
        store.answer(method, "*", reply(200, {}))
    yield store
    store.close()
