"""``--metrics ADDR``: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP (DESIGN §10).

A stdlib HTTP server in one daemon thread (a request each in a short-lived
thread, so a stuck client cannot block the kubelet's probes). It serves what
:class:`envwrap.metrics.Metrics` derives from events; ``prometheus_client``
only formats ``/metrics``, and is imported here, i.e. only with ``--metrics``.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from envwrap import events, log
from envwrap.errors import ConfigError
from envwrap.metrics import Metrics

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from envwrap.config import Settings

__all__ = ["MetricsServer", "parse_address", "start_metrics"]

#: how often the idle server thread wakes up (serve_forever's poll); never
#: shut down gracefully (envwrap exits), so this costs nothing but wake-ups
POLL_INTERVAL = 5.0


def parse_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:9102``, ``:9102`` (every interface), ``[::1]:9102`` -> (host, port).

    Raises :class:`ConfigError` (78) naming the option.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(
            f"--metrics {text!r}: not an address (examples: 127.0.0.1:9102, :9102, [::1]:9102)"
        )
    return host or "0.0.0.0", int(port_text)  # noqa: S104 -- ":PORT" asks for every interface


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        metrics = self.server.metrics
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

            self._reply(200, generate_latest(_Registry(metrics)), CONTENT_TYPE_LATEST, head)
        elif path in ("/healthz", "/readyz"):
            reason = metrics.not_alive() if path == "/healthz" else metrics.not_ready()
            body = {"status": "ok"} if reason is None else {"status": "fail", "reason": reason}
            data = (json.dumps(body) + "\n").encode()
            self._reply(200 if reason is None else 503, data, "application/json", head)
        else:
            self._reply(404, b'{"status": "not found"}\n', "application/json", head)

    def _reply(self, status: int, data: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a scrape every few seconds is not news."""


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
            server = _Server((host, port), _Handler, bind_and_activate=True)
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
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz", address=self.address)


def start_metrics(settings: Settings) -> MetricsServer:
    """Bind ``--metrics`` (exit 78 on failure), subscribe the metrics to events, serve."""
    try:
        import prometheus_client  # noqa: F401 -- fail early, with the fix
    except ImportError:
        raise ConfigError(
            "--metrics needs prometheus_client", hint="pip install 'envwrap[metrics]'"
        ) from None
    assert settings.metrics is not None
    sidecar = settings.command == "sidecar"
    metrics = Metrics(
        follows_rotations=sidecar or settings.on_change == "signal",
        needs_child=not sidecar,
    )
    server = MetricsServer(settings.metrics, metrics)
    events.add_sink(metrics)
    server.start()
    return server
