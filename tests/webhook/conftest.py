"""Fixtures of the webhook tests: a running ``envwrap webhook`` and the bundle."""

from __future__ import annotations

import http.client
import json
import re
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, envwrap_command
from tests.helpers import LineCollector, wait_until
from tests.webhook.support import IMAGE, self_signed


class Webhook:
    """A running ``envwrap webhook`` process and an HTTPS client for it."""

    def __init__(self, proc: subprocess.Popen[str], cert: Path, key: Path) -> None:
        self.proc = proc
        self.cert = cert
        self.key = key
        assert proc.stderr
        self.stderr = LineCollector(proc.stderr)
        wait_until(lambda: "serving https://" in self.stderr.text() or proc.poll() is not None,
                   timeout=30)
        match = re.search(r"serving https://127\.0\.0\.1:(\d+)/mutate", self.stderr.text())
        assert match, self.stderr.text()
        self.port = int(match.group(1))

    def client_context(self, cafile: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(cafile or self.cert))

    def connection(self, cafile: Path | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10,
                                           context=self.client_context(cafile))

    def post(self, body: bytes | dict[str, object], path: str = "/mutate") -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn = self.connection()
        try:
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def mutate(self, review: dict[str, object]) -> dict[str, object]:
        status, body = self.post(review)
        assert status == 200, body
        answer = json.loads(body)
        assert isinstance(answer, dict)
        return answer

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def webhook(tmp_path: Path, base_env: dict[str, str]) -> Iterator[Webhook]:
    cert, key = self_signed(tmp_path)
    proc = subprocess.Popen(
        [*envwrap_command(), "webhook", "--listen", "127.0.0.1:0", "--tls-cert", str(cert),
         "--tls-key", str(key), "--image", IMAGE, "--log-level", "info"],
        env=base_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    server = Webhook(proc, cert, key)
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, server.stderr.join()
        assert "Traceback" not in server.stderr.join()


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session; the slow part is cached across sessions (scripts/bundle/build.py)."""
    out = tmp_path_factory.mktemp("bundle") / "envwrap"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bundle.sh"), str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out
