"""Values that look like a mistyped reference are warned about; URLs are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from envwrap.near_miss import likely_reference
from testsupport.helpers import run_envwrap


@pytest.mark.parametrize(
    ("value", "meant"),
    [
        ("vualt://secret/app#password", "vault://"),
        ("valut://secret/app", "vault://"),
        ("vaultt://secret/app", "vault://"),
        ("vault:/secret/app", "vault://"),
        ("vault:secret/app#password", "vault://"),
        ("VAULT://secret/app", "vault://"),
        ("aws-sn://prod/db#password", "aws-sm://"),
        ("aws-sssm:///prod/db", "aws-ssm://"),
        ("aws-ssm:/prod/db", "aws-ssm://"),
        ("ref+vualt://secret/app", "ref+vault://"),
        ("ref+fiel:///run/secrets/pw", "ref+file://"),
    ],
)
def test_a_near_miss_names_the_form_it_probably_meant(value: str, meant: str) -> None:
    assert likely_reference(value) == meant


@pytest.mark.parametrize(
    "value",
    [
        "vault://secret/app#password", "aws-sm://prod/db", "aws-ssm:///prod/db",
        "ref+file:///run/secrets/pw", "ref+gcp://project/secret",
        "https://example.com", "http://localhost:3001", "postgres://user:pw@db/app",
        "postgresql://db/app", "redis://localhost:6379", "rediss://cache:6380",
        "mysql://db/app", "file:///etc/hosts", "s3://bucket/key", "amqp://mq",
        "fault:injection", "vaults are nice", "12:30", "C:\\Windows", "/usr/bin:/bin",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db", "", "value",
        "sandbox", "15m",
    ],
)
def test_real_references_urls_and_text_are_not_near_misses(value: str) -> None:
    assert likely_reference(value) is None


def test_the_warning_names_the_variable_and_the_likely_form_and_the_program_still_runs(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    (tmp_path / ".env").write_text(
        "DB_PASSWORD=vualt://secret/app/db#password\nAPI_URL=https://api.example.com\n"
    )
    result = run_envwrap(["--", "sh", "-c", 'echo "$DB_PASSWORD"'], env=base_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "vualt://secret/app/db#password"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # API_URL is not warned about
    assert "DB_PASSWORD" in lines[0] and "'vault://'" in lines[0]
    assert "Traceback" not in result.stderr


def test_check_warns_too(tmp_path: Path, base_env: dict[str, str]) -> None:
    (tmp_path / ".env").write_text("JWT_SECRET=vault:secret/app/jwt#key\n")
    result = run_envwrap(["check"], env=base_env, cwd=tmp_path)
    assert "JWT_SECRET" in result.stderr and "'vault://'" in result.stderr
