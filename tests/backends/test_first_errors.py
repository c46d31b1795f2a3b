"""The commonest first mistakes are said as such, at once, naming the variable and reference.

No ``VAULT_ADDR``, no token, a typo'd ``ref+`` scheme, a wrong ``#key`` -- against a
real OpenBao (and moto for AWS), through the real command.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from testsupport.fixtures_aws import MotoServer, aws_env
from testsupport.fixtures_vault import OpenBao
from testsupport.helpers import assert_not_leaked, canary, run_envwrap

ARGS = ["--no-env-file", "--log-level", "debug"]


def fail_fast(env: dict[str, str], code: int, *values: str) -> str:
    """Run envwrap expecting ``code`` within a few seconds (default --start-timeout: 30s)."""
    started = time.monotonic()
    result = run_envwrap([*ARGS, "--", "true"], env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == code, result.stderr
    assert elapsed < 10, f"took {elapsed:.1f}s: retried instead of saying what is wrong"
    assert "Traceback" not in result.stderr
    assert "retrying" not in result.stderr
    for value in values:
        assert_not_leaked(value, result.stderr, result.stdout)
    return result.stderr


def test_no_vault_addr_is_said_at_once(base_env: dict[str, str], tmp_path: Path) -> None:
    token = canary("token")
    env = {**base_env, "HOME": str(tmp_path), "VAULT_TOKEN": token,
           "DB_PASSWORD": "vault://secret/app#password"}
    stderr = fail_fast(env, 78, token)
    assert "DB_PASSWORD: vault://secret/app#password: VAULT_ADDR is not set" in stderr
    assert "127.0.0.1:8200" not in stderr.split("VAULT_ADDR is not set")[0]


def test_no_token_and_no_login_method_is_said_as_such(
    openbao: OpenBao, base_env: dict[str, str], tmp_path: Path
) -> None:
    value = canary()
    openbao.kv2_put("first/app", {"password": value})
    env = {**base_env, "HOME": str(tmp_path), "VAULT_ADDR": openbao.addr,
           "DB_PASSWORD": "vault://secret/first/app#password"}
    stderr = fail_fast(env, 78, value)
    assert "DB_PASSWORD: vault://secret/first/app#password: no Vault token: set VAULT_TOKEN" \
        in stderr
    assert "invalid or expired" not in stderr
    (tmp_path / ".vault-token").write_text(openbao.token + "\n")  # `bao login` writes it
    result = run_envwrap([*ARGS, "--", "sh", "-c", 'test -n "$DB_PASSWORD"'], env=env)
    assert result.returncode == 0, result.stderr


def test_a_typo_in_a_ref_scheme_names_the_variable_and_the_likely_form(
    base_env: dict[str, str],
) -> None:
    env = {**base_env, "DB_PASSWORD": "ref+vualt://secret/app#password"}
    stderr = fail_fast(env, 78)
    assert "DB_PASSWORD: ref+vualt://secret/app#password:" in stderr
    assert "did you mean ref+vault://?" in stderr
    assert "no backend is installed for the scheme 'vualt'" in stderr


def test_a_wrong_key_lists_the_keys_there_are_never_values(
    openbao: OpenBao, base_env: dict[str, str]
) -> None:
    password, user = canary("pw"), canary("user")
    path = f"first/{secrets.token_hex(4)}"
    openbao.kv2_put(path, {"password": password, "username": user, "host": "db.internal"})
    env = {**base_env, **openbao.env(), "DB_PASSWORD": f"vault://secret/{path}#pasword"}
    stderr = fail_fast(env, 65, password, user, "db.internal")
    assert f"DB_PASSWORD: vault://secret/{path}#pasword: the secret has no key 'pasword'" \
        in stderr
    assert "(its keys: host, password, username)" in stderr
    env["DB_PASSWORD"] = f"vault://secret/{path}#/password/x"  # a pointer into a string
    assert "no key '/password/x'" in fail_fast(env, 65, password, user)


def test_a_wrong_key_in_an_aws_secret_lists_its_keys(
    aws: MotoServer, base_env: dict[str, str]
) -> None:
    password = canary("pw")
    aws.sm.create_secret(Name="first/db", SecretString=json.dumps(
        {"password": password, "user": "app"}))
    env = aws_env(base_env, aws, DB_PASSWORD="aws-sm://first/db#Password")
    stderr = fail_fast(env, 65, password)
    assert "DB_PASSWORD: aws-sm://first/db#Password: the secret has no key 'Password' " \
        "(its keys: password, user)" in stderr
