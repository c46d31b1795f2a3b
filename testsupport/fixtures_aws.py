"""A real moto server for the AWS backends, and a loopback proxy in front of it.

* ``moto_server`` (session): ``moto_server`` on a free loopback port; boto3 and
  envwrap reach it through ``AWS_ENDPOINT_URL``, the standard setting.
* ``aws`` (function): the same server, its state reset before and after the
  test (``POST /moto-api/reset``), IAM enforcement off.
* ``aws_proxy`` (function): an HTTP proxy between envwrap and moto that counts
  the API calls (by ``X-Amz-Target``) and can answer chosen calls with an AWS
  error -- a real HTTP response that botocore parses, not a mock of our code.

The module is also imported by ``benchmarks/bench_aws.py``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from testsupport.helpers import stop_process
from testsupport.proxy import CountingHttpProxy, Request

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, data: bytes = b"") -> None:
    # not form-encoded: Flask would move the body out of request.data
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


class MotoServer:
    """A running ``moto_server`` process and boto3 clients pointed at it."""

    def __init__(self, log_path: Path) -> None:
        binary = Path(sys.executable).parent / "moto_server"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 -- closed in stop()
        self.process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(deadline=time.monotonic() + 30)
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            # never read the developer's own AWS files or the instance metadata service
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self.sm = self.client("secretsmanager")
        self.ssm = self.client("ssm")
        self.iam = self.client("iam")

    def client(self, service: str, region: str = REGION, **kwargs: Any) -> Any:
        import boto3

        settings: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "region_name": region,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        settings.update(kwargs)
        make: Any = boto3.client  # its overloads want a literal service name
        return make(service, **settings)

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not answer within 30s") from None
                time.sleep(0.05)

    def reset(self) -> None:
        """Forget every resource and stop enforcing IAM."""
        _post(f"{self.endpoint}/moto-api/reset")
        self.enforce_auth(False)

    def enforce_auth(self, on: bool = True) -> None:
        """Make moto check signatures and IAM policies (from the next request on)."""
        _post(f"{self.endpoint}/moto-api/reset-auth", b"0" if on else b"inf")

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self._log.close()


class AwsProxy(CountingHttpProxy):
    """A loopback HTTP proxy that counts AWS API calls and can inject AWS errors.

    ``faults[operation] = (status, code, times)`` answers the next ``times``
    calls of ``operation`` (e.g. ``"BatchGetSecretValue"``; ``times=None`` for
    ever) with a JSON-protocol AWS error, as AWS itself would send it.
    """

    def __init__(self, upstream: str) -> None:
        self.faults: dict[str, tuple[int, str, int | None]] = {}
        super().__init__(upstream)
        self.endpoint = self.url

    @property
    def calls(self) -> list[str]:
        """The operation of every call, in order."""
        return [r.operation or r.path for r in self.since()]

    def count(self, operation: str | None = None) -> int:
        calls = self.calls
        return len(calls) if operation is None else calls.count(operation)

    def counts(self, start: float = 0.0) -> Counter[str]:  # type: ignore[override]
        return Counter(r.operation or r.path for r in self.since(start))

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def answer(self, handler: BaseHTTPRequestHandler, request: Request) -> bool:
        fault = self._take_fault(request.operation or request.path)
        if fault is None:
            return False
        status, code = fault
        payload = json.dumps({"__type": code, "message": "injected by the test proxy"})
        self.reply(handler, status, {"Content-Type": "application/x-amz-json-1.1"},
                   payload.encode())
        return True

    def _take_fault(self, operation: str) -> tuple[int, str] | None:
        with self._lock:
            fault = self.faults.get(operation)
            if fault is None:
                return None
            status, code, times = fault
            if times is not None:
                if times <= 1:
                    del self.faults[operation]
                else:
                    self.faults[operation] = (status, code, times - 1)
            return status, code


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[MotoServer]:
    """The moto server with empty state, for one test."""
    moto_server.reset()
    yield moto_server
    moto_server.reset()


@pytest.fixture
def aws_proxy(aws: MotoServer) -> Iterator[AwsProxy]:
    proxy = AwsProxy(aws.endpoint)
    yield proxy
    proxy.close()


# --- helpers for the CLI tests ------------------------------------------------


def child_environment(stdout: str) -> dict[str, str]:
    """Parse the output of ``env -0`` run as envwrap's child."""
    pairs = (item.partition("=") for item in stdout.split("\0") if item)
    return {name: value for name, _, value in pairs}


def aws_env(base_env: dict[str, str], server: MotoServer, **extra: str) -> dict[str, str]:
    """An environment for envwrap that reaches ``server`` (or a proxy via extra)."""
    return {**base_env, **server.env, **extra}
