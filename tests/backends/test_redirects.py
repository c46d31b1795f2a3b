"""No store credential crosses a redirect to another origin (docs/SECURITY.md, Network).

A fake Vault on loopback answers 307 to a second listener on another address
(or port) that records whatever reaches it: the token and the AppRole
secret_id must never arrive there. Through the real command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testsupport.fake_store import FakeStore, kv2_secret, redirect, vault_kv2
from testsupport.helpers import assert_not_leaked, canary, fp, run_envwrap

ARGS = ["--no-env-file", "--log-level", "debug", "--start-timeout", "10s"]


def vault_env(base_env: dict[str, str], store: FakeStore, **extra: str) -> dict[str, str]:
    return {**base_env, "VAULT_ADDR": store.url, "HOME": "/nonexistent", **extra}


@pytest.mark.parametrize("where", ["another host", "another port"])
@pytest.mark.parametrize("which", ["the read", "every request"])
def test_the_token_never_follows_a_redirect_to_another_origin(
    fake_store: FakeStore, redirect_target: FakeStore, base_env: dict[str, str],
    where: str, which: str,
) -> None:
    target = redirect_target if where == "another host" else FakeStore("127.0.0.1")
    try:
        token, value = canary("token"), canary("value")
        elsewhere = f"{target.url}/v1/secret/data/app"
        vault_kv2(fake_store, {"app": redirect(elsewhere)})
        if which == "every request":  # the mount detection too (it goes through hvac)
            fake_store.routes.clear()
            fake_store.answer("GET", "*", redirect(elsewhere))
        env = vault_env(base_env, fake_store, VAULT_TOKEN=token, X="vault://secret/app#k")
        result = run_envwrap([*ARGS, "--", "true"], env=env)
        assert result.returncode == 69, result.stderr
        assert target.seen == [], "a request followed the redirect"
        # the token did go where VAULT_ADDR points: the test would see a leak
        assert fake_store.seen and fake_store.seen[0].headers.get("X-Vault-Token") == token
        assert f"redirected to {target.url}" in result.stderr
        assert "X: vault://secret/app#k:" in result.stderr
        assert "Traceback" not in result.stderr
        assert_not_leaked(token, result.stderr, result.stdout)
        assert_not_leaked(value, result.stderr, result.stdout)
        # detection, the read, and the read again through requests (which owns redirects):
        # a refused redirect is not retried
        assert len(fake_store.seen) <= 3
    finally:
        if target is not redirect_target:
            target.close()


def test_https_never_falls_to_plain_http(
    redirect_target: FakeStore, base_env: dict[str, str], tmp_path: Path
) -> None:
    from testsupport.webhook import self_signed

    cert, key = self_signed(tmp_path, "vault")
    secure = FakeStore(tls=(cert, key))
    try:
        token = canary("token")
        secure.answer("GET", "*", redirect(f"{redirect_target.url}/v1/secret/data/app"))
        env = vault_env(base_env, secure, VAULT_TOKEN=token, VAULT_CACERT=str(cert),
                        X="vault://secret/app#k")
        result = run_envwrap([*ARGS, "--", "true"], env=env)
        assert result.returncode == 69, result.stderr
        assert secure.seen, "the https store was reached"
        assert redirect_target.seen == []
        assert f"{secure.url} redirected to {redirect_target.url}" in result.stderr
        assert_not_leaked(token, result.stderr, result.stdout)
    finally:
        secure.close()


def test_an_approle_login_never_follows_a_307_elsewhere(
    fake_store: FakeStore, redirect_target: FakeStore, base_env: dict[str, str]
) -> None:
    secret_id = canary("secret-id")
    fake_store.answer("POST", "/v1/auth/approle/login",
                      redirect(f"{redirect_target.url}/v1/auth/approle/login"))
    env = vault_env(base_env, fake_store, VAULT_ROLE_ID="role", VAULT_SECRET_ID=secret_id,
                    X="vault://secret/app#k")
    result = run_envwrap([*ARGS, "--", "true"], env=env)
    assert result.returncode == 69, result.stderr
    assert redirect_target.seen == []
    assert secret_id.encode() in fake_store.received("POST")[0].body  # sent to VAULT_ADDR only
    assert "redirected to http://127.0.0.2" in result.stderr
    assert_not_leaked(secret_id, result.stderr, result.stdout)


def test_one_redirect_within_the_origin_is_followed_two_are_not(
    fake_store: FakeStore, base_env: dict[str, str], workdir: Path
) -> None:
    value = canary()
    vault_kv2(fake_store, {
        "moved": redirect("/v1/secret/data/real"),
        "real": kv2_secret({"k": value}, version=4),
        "twice": redirect("/v1/secret/data/moved"),
    })
    env = vault_env(base_env, fake_store, VAULT_TOKEN="t", X="vault://secret/moved#k")
    moved = run_envwrap([*ARGS, "--", "sh", "-c", 'printf %s "$X" | sha256sum'], env=env)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith(fp(value))
    assert_not_leaked(value, moved.stderr)
    env["X"] = "vault://secret/twice#k"
    twice = run_envwrap([*ARGS, "--", "true"], env=env)
    assert twice.returncode == 69, twice.stderr
    assert "redirected more than once" in twice.stderr
    assert_not_leaked(value, twice.stderr)
