"""Fixture of the webhook tests: a running ``envwrap webhook``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.webhook import IMAGE, Webhook, self_signed


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
