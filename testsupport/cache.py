"""The ``--cache`` tests' harness: one cache file, its key, an audit log and a Vault
secret behind a proxy that can be cut (registered through ``tests/conftest.py``)."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport.fixtures_vault import OpenBao
from testsupport.helpers import assert_not_leaked, canary, forms, fp, run_envwrap
from testsupport.proxy import TcpProxy

__all__ = ["CHILD", "CacheSetup", "cache_setup"]

#: the child proves which value it got without printing it
CHILD = ["/bin/sh", "-c",
         'printf "fp %s\\n" "$(printf %s "$DB" | sha256sum | cut -c1-12)"; '
         'test -z "$ENVWRAP_CACHE_KEY" && echo scrubbed']


class CacheSetup:
    """One cache file, its key (mode 0600), an audit log and a Vault secret behind a proxy."""

    def __init__(self, tmp_path: Path, openbao: OpenBao, base_env: dict[str, str]) -> None:
        self.dir = tmp_path
        self.cache = tmp_path / "cache" / "secrets.bin"
        self.cache.parent.mkdir()
        self.key = tmp_path / "key"
        self.key.write_text(secrets.token_urlsafe(32) + "\n")
        self.key.chmod(0o600)
        self.audit = tmp_path / "audit.log"
        self.openbao = openbao
        self.path = f"cache/{secrets.token_hex(5)}"
        self.value = canary("db")
        openbao.kv2_put(self.path, {"value": self.value, "user": "app"})
        self.proxy = TcpProxy(int(openbao.addr.rsplit(":", 1)[1]))
        self.env = {**base_env, **openbao.env(VAULT_ADDR=self.proxy.url),
                    "DB": f"vault://secret/{self.path}#value"}

    def args(self, *extra: str) -> list[str]:
        return ["--no-env-file", "--log-level", "debug", "--start-timeout", "1s",
                "--cache", str(self.cache), "--cache-key-file", str(self.key),
                "--audit-log", str(self.audit), *extra]

    def run(self, *extra: str, env: dict[str, str] | None = None,
            child: list[str] = CHILD) -> subprocess.CompletedProcess[str]:
        result = run_envwrap([*self.args(*extra), "--", *child], env=env or self.env,
                             cwd=self.dir)
        assert "Traceback" not in result.stderr
        self.assert_clean(result.stderr, result.stdout)
        return result

    def audit_records(self) -> list[dict[str, object]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def assert_clean(self, *texts: str, values: tuple[str, ...] = ()) -> None:
        audit = self.audit.read_text() if self.audit.exists() else ""
        content = self.cache.read_bytes() if self.cache.exists() else b""
        # `if ... raise`, not `assert`: pytest's rewritten asserts would print the value
        for value in (self.value, *values):
            assert_not_leaked(value, *texts, audit)
            if any(form in content for form in forms(value)):
                raise AssertionError("a form of a secret value is in the cache file")
        key = self.key.read_text().strip()
        assert_not_leaked(key, *texts, audit)
        if key.encode() in content:
            raise AssertionError("the key is in the cache file")

    def warm(self) -> None:
        """A live start, which writes the cache."""
        result = self.run()
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"fp {fp(self.value)}", "scrubbed"]
        assert self.cache.exists()
        assert self.cache.stat().st_mode & 0o777 == 0o600


@pytest.fixture
def cache_setup(tmp_path: Path, openbao: OpenBao,
                base_env: dict[str, str]) -> Iterator[CacheSetup]:
    made = CacheSetup(tmp_path, openbao, base_env)
    yield made
    made.proxy.close()
