"""``envwrap webhook``: the Kubernetes mutating admission webhook.

Serves ``POST /mutate`` (AdmissionReview ``admission.k8s.io/v1``) and
``GET /healthz`` over HTTPS until SIGTERM or SIGINT, then lets the requests in
flight finish. What a pod becomes is decided in
:mod:`envwrap.modes.webhook_patch`; the HTTP side is
:mod:`envwrap.modes.webhook_http`, the certificate
:mod:`envwrap.modes.webhook_tls`. The webhook reads no secret.
"""

from __future__ import annotations

import json
import signal

from envwrap import log
from envwrap.errors import UsageError
from envwrap.modes.webhook_http import HttpsServer, Limits
from envwrap.modes.webhook_patch import InvalidReview, review_response
from envwrap.modes.webhook_tls import Certificates
from envwrap.values import parse_host_port

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envwrap.config import Settings

__all__ = ["MutateHandler", "run_webhook"]

#: how long SIGTERM waits for the requests in flight (the API server's own
#: timeout for a webhook call is at most 30 s, 10 s by default)
STOP_GRACE = 10.0
_JSON = "application/json"


class MutateHandler:
    """(method, path, body) -> (status, content type, body) for the webhook's routes."""

    def __init__(self, image: str) -> None:
        self.image = image

    def __call__(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                return 405, "text/plain", b"use GET\n"
            return 200, "text/plain", b"ok\n"
        if path != "/mutate":
            return 404, "text/plain", b"not found: POST /mutate, GET /healthz\n"
        if method != "POST":
            return 405, "text/plain", b"use POST\n"
        try:
            review, mutation = review_response(body, self.image)
        except InvalidReview as exc:
            log.info(f"webhook: answered 400: {exc}")
            return 400, "text/plain", f"{exc}\n".encode()
        except Exception as exc:
            # A bug of ours must not block a pod: allowed, unchanged, and said so.
            log.error(f"webhook: internal error ({type(exc).__name__}); the pod was not changed")
            return 200, _JSON, _unchanged(body)
        if mutation.injected or mutation.warnings:
            log.info(
                "webhook: " + ("injected envwrap" if mutation.injected else "left unchanged"),
                pod=mutation.pod,
                containers=",".join(mutation.injected) or None,
                warnings=" | ".join(mutation.warnings) or None,
            )
        return 200, _JSON, json.dumps(review, separators=(",", ":")).encode()


def _unchanged(body: bytes) -> bytes:
    uid = json.loads(body)["request"]["uid"]
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": True,
                     "warnings": ["envwrap: the webhook failed; the pod was not changed"]},
    }).encode()


def run_webhook(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; 0 after a clean stop."""
    missing = [flag for flag, value in (
        ("--listen", settings.listen), ("--tls-cert", settings.tls_cert),
        ("--tls-key", settings.tls_key), ("--image", settings.image),
    ) if not value]
    if missing:
        raise UsageError(
            f"'envwrap webhook' needs {', '.join(missing)}",
            hint="envwrap webhook --listen :8443 --tls-cert tls.crt --tls-key tls.key "
                 "--image registry.example.com/envwrap-bundle:0.1.0",
        )
    if len(settings.listen) != 1:
        raise UsageError("'envwrap webhook' listens on one --listen address")
    assert settings.tls_cert and settings.tls_key and settings.image
    host, port = parse_host_port(settings.listen[0], "--listen")
    certificates = Certificates(settings.tls_cert, settings.tls_key)
    # Before any thread starts, so that every thread inherits the mask and the
    # signals wait for sigwait below instead of interrupting a worker.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = HttpsServer(host, port, certificates, MutateHandler(settings.image), Limits())
    import threading

    accepting = threading.Thread(target=server.serve, name="webhook-accept", daemon=True)
    accepting.start()
    bound_host, bound_port = server.address
    log.info(f"webhook: serving https://{_url_host(bound_host)}:{bound_port}/mutate",
             image=settings.image)
    received = signal.sigwait(stop_signals)
    log.info(f"webhook: {signal.Signals(received).name} received, stopping")
    server.stop(STOP_GRACE)
    accepting.join(timeout=2)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
