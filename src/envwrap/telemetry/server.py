"""``--metrics ADDR``: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP (DESIGN §10).

A small stdlib server (socketserver) in one daemon thread, a request each in
a short-lived thread, so a stuck client cannot block the kubelet's probes. It serves what
:class:`envwrap.telemetry.metrics.Metrics` derives from events; ``prometheus_client``
only formats ``/metrics``, and is imported here, i.e. only with ``--metrics``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading

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
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}
#: how often the idle server thread wakes up to see whether it must stop
#: (serve_forever's poll); one wake-up a second costs ~0.002% of a core
POLL_INTERVAL = 1.0


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


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    metrics: Metrics
    #: the last /metrics body and the state version it was rendered from: an
    #: idle envwrap (no event since) answers a scrape without re-rendering
    rendered: tuple[int, bytes] = (-1, b"")


class _Handler(socketserver.StreamRequestHandler):
    """A minimal HTTP/1.1 responder: GET or HEAD, one request per connection.

    http.server's handler parses every header with the email package; the
    probes and Prometheus need none of them, and a scrape a second should cost
    envwrap next to nothing.
    """

    server: _Server
    timeout = 5  # a client that sends nothing does not hold a thread for long

    def handle(self) -> None:
        try:
            request = self.rfile.readline(MAX_LINE + 1)
            for _ in range(MAX_HEADERS):  # skip the headers, to the blank line
                line = self.rfile.readline(MAX_LINE + 1)
                if line in (b"\r\n", b"\n", b""):
                    break
        except OSError:
            return
        parts = request.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._reply(400, b'{"status": "bad request"}\n', JSON, head=False)
            return
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self._reply(405, b'{"status": "method not allowed"}\n', JSON, head=False)
            return
        head = method == b"HEAD"
        metrics = self.server.metrics
        if target == b"/metrics":
            from prometheus_client.exposition import CONTENT_TYPE_LATEST

            self._reply(200, self._exposition(metrics), CONTENT_TYPE_LATEST, head)
        elif target in (b"/healthz", b"/readyz"):
            reason = metrics.not_alive() if target == b"/healthz" else metrics.not_ready()
            body = {"status": "ok"} if reason is None else {"status": "fail", "reason": reason}
            data = (json.dumps(body) + "\n").encode()
            self._reply(200 if reason is None else 503, data, JSON, head)
        else:
            self._reply(404, b'{"status": "not found"}\n', JSON, head)

    def _exposition(self, metrics: Metrics) -> bytes:
        version, data = self.server.rendered
        if version != metrics.version:
            from prometheus_client.exposition import generate_latest

            version = metrics.version  # read first: a later event re-renders next time
            data = generate_latest(_Registry(metrics))  # type: ignore[arg-type]
            self.server.rendered = (version, data)
        return data

    def _reply(self, status: int, data: bytes, content_type: str, head: bool) -> None:
        header = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):  # the client went away
            self.wfile.write(header if head else header + data)


class _Registry:
    """What ``generate_latest`` needs of a registry: ``collect()``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Any:
        return self.metrics.collect()


class MetricsServer:
    """The HTTP server thread; :attr:`address` is where it listens."""

    def __init__(self, address: str, metrics: Metrics) -> None:
        host, port = parse_address(address)
        _Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            server = _Server((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"--metrics {address}: cannot listen ({exc.strerror or exc})",
                hint="choose a free port, or another address",
            ) from None
        server.metrics = metrics
        self.server = server
        self.metrics = metrics
        bound_host, bound_port = server.server_address[:2]
        shown = bound_host if isinstance(bound_host, str) else bound_host.decode()
        self.address = f"[{shown}]:{bound_port}" if ":" in shown else f"{shown}:{bound_port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL},
            name="envwrap-metrics", daemon=True,
        )

    def start(self) -> None:
        # Started before the supervisor blocks the signals it takes with
        # sigwaitinfo: a thread that does not block them could be picked by the
        # kernel for a process-directed SIGTERM and die of its default action.
        # The thread (and every request thread it starts) blocks them all.
        import signal

        previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        log.info("serving /metrics, /healthz and /readyz", address=self.address)

    def close(self) -> None:
        """Stop serving (within POLL_INTERVAL) and close the socket; envwrap itself
        just exits, the thread is a daemon."""
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


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
