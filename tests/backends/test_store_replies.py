"""What a store answers besides the value is checked, and a broken store is exit 69.

Fake Vault and AWS endpoints on loopback answer with a version or a lease id that
is an object holding the value, a body that is not UTF-8, JSON that is not the
service's: envwrap refuses each with exit 69 (unreachable, in effect: a
``--cache`` still serves), and the value reaches neither stderr at debug level
nor the audit log. Through the real command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testsupport.fake_store import FakeStore, kv2_secret, raw, reply, vault_kv2
from testsupport.fixtures_aws import MotoServer, aws_env
from testsupport.helpers import assert_not_leaked, canary, fp, run_envwrap

ARGS = ["--no-env-file", "--log-level", "debug", "--start-timeout", "1s"]


def refused(env: dict[str, str], value: str, audit: Path) -> str:
    """Run envwrap expecting 69; its stderr. The value is nowhere in what it wrote."""
    result = run_envwrap([*ARGS, "--audit-log", str(audit), "--", "true"], env=env)
    assert result.returncode == 69, result.stderr
    assert "Traceback" not in result.stderr
    assert_not_leaked(value, result.stderr, result.stdout, audit.read_text())
    return result.stderr


@pytest.mark.parametrize("metadata", ["version object", "version list", "version text",
                                      "version bool"])
def test_a_vault_version_that_is_not_a_number_is_refused_unlogged(
    fake_store: FakeStore, base_env: dict[str, str], tmp_path: Path, metadata: str
) -> None:
    value = canary()
    version = {"version object": {"x": value}, "version list": [value],
               "version text": f"7 {value}", "version bool": True}[metadata]
    vault_kv2(fake_store, {"app": kv2_secret({"k": value}, version=version)})
    env = {**base_env, "VAULT_ADDR": fake_store.url, "VAULT_TOKEN": "t",
           "X": "vault://secret/app#k"}
    stderr = refused(env, value, tmp_path / "audit.log")
    assert "X: vault://secret/app#k:" in stderr
    assert "unexpected response" in stderr


def test_a_vault_lease_id_that_is_not_text_is_refused_unlogged(
    fake_store: FakeStore, base_env: dict[str, str], tmp_path: Path
) -> None:
    value = canary()
    fake_store.answer("GET", "/v1/database/creds/app", reply(200, {
        "data": {"password": value}, "lease_id": {"id": value}, "lease_duration": 60,
        "renewable": True,
    }))  # no mount detection (404): the path is read as it is
    env = {**base_env, "VAULT_ADDR": fake_store.url, "VAULT_TOKEN": "t",
           "X": "vault://database/creds/app#password"}
    stderr = refused(env, value, tmp_path / "audit.log")
    assert "X: vault://database/creds/app#password:" in stderr


def test_a_well_formed_version_in_digits_is_accepted(
    fake_store: FakeStore, base_env: dict[str, str]
) -> None:
    value = canary()
    vault_kv2(fake_store, {"app": kv2_secret({"k": value}, version="12")})
    env = {**base_env, "VAULT_ADDR": fake_store.url, "VAULT_TOKEN": "t",
           "X": "vault://secret/app#k"}
    result = run_envwrap(["check", "--no-env-file"], env=env)
    assert result.returncode == 0, result.stderr
    assert "12" in result.stdout
    assert_not_leaked(value, result.stdout, result.stderr)


def aws_fake_env(base_env: dict[str, str], store: FakeStore, **extra: str) -> dict[str, str]:
    return {**base_env, "AWS_ENDPOINT_URL": store.url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true", **extra}


def _arn() -> str:
    return "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf"


@pytest.mark.parametrize("reference", ["aws-sm://app", "aws-ssm://app"])
@pytest.mark.parametrize("answer", ["not UTF-8", "foreign JSON", "version object"])
def test_an_aws_endpoint_that_answers_as_no_aws_service_does_is_69(
    fake_store: FakeStore, base_env: dict[str, str], tmp_path: Path, reference: str,
    answer: str,
) -> None:
    value = canary()
    body = {
        "not UTF-8": raw(200, b"\xff\xfe\x00" + value.encode("utf-16-le"),
                         "application/x-amz-json-1.1"),
        "foreign JSON": reply(200, {"hello": value}),
        "version object": reply(200, {
            "ARN": _arn(), "Name": "app", "VersionId": {"x": value}, "SecretString": value,
            "Parameter": {"Name": "app", "Value": value, "Version": {"x": value}},
        }),
    }[answer]
    fake_store.answer("POST", "*", body)
    env = aws_fake_env(base_env, fake_store, X=reference)
    stderr = refused(env, value, tmp_path / "audit.log")
    assert f"X: {reference}:" in stderr
    assert "not an AWS reply" in stderr or "not a number or an id" in stderr


@pytest.mark.parametrize("address", ["http://[::1", "http://vault:99999", "vault:8200"])
def test_an_unusable_vault_addr_is_a_configuration_error(
    base_env: dict[str, str], address: str
) -> None:
    token = canary("token")
    env = {**base_env, "VAULT_ADDR": address, "VAULT_TOKEN": token, "X": "vault://secret/a#k"}
    result = run_envwrap(["--no-env-file", "--", "true"], env=env)
    assert result.returncode == 78, result.stderr
    assert "X: vault://secret/a#k: VAULT_ADDR" in result.stderr
    assert "Traceback" not in result.stderr
    assert_not_leaked(token, result.stderr)


def test_a_foreign_reply_keeps_the_cache_and_starts_from_it(
    aws: MotoServer, fake_store: FakeStore, base_env: dict[str, str], tmp_path: Path
) -> None:
    value = canary()
    aws.sm.create_secret(Name="app", SecretString=value)
    cache = tmp_path / "secrets.cache"
    args = ["--no-env-file", "--start-timeout", "1s", "--cache", str(cache)]
    key = {"ENVWRAP_CACHE_KEY": "k" * 32}
    first = run_envwrap([*args, "--", "true"], env=aws_env(base_env, aws, X="aws-sm://app", **key))
    assert first.returncode == 0, first.stderr
    assert cache.exists()
    fake_store.answer("POST", "*", reply(200, {"hello": "world"}))  # a proxy's JSON, say
    env = aws_fake_env(base_env, fake_store, X="aws-sm://app", **key)
    second = run_envwrap([*args, "--", "sh", "-c", 'printf %s "$X" | sha256sum'], env=env)
    assert second.returncode == 0, second.stderr  # unreachable, in effect: the cache serves
    assert second.stdout.startswith(fp(value))
    assert "starting from the fallback cache" in second.stderr
    assert cache.exists()
    assert_not_leaked(value, first.stderr, second.stderr)
