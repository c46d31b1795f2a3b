"""``--mask`` masks every secret piece of an inline value, not only whole values:
the password inside ``postgres://${...#user}:${...#password}@db/app``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testsupport.helpers import canary, run_envwrap


@pytest.fixture
def dsn_env(tmp_path: Path, base_env: dict[str, str]) -> tuple[dict[str, str], str, str]:
    user, password = canary("user"), canary("pw")
    secret = tmp_path / "db.json"
    secret.write_text(json.dumps({"user": user, "password": password}))
    env = {
        **base_env,
        "DSN": f"postgres://${{ref+file://{secret}#user}}:${{ref+file://{secret}#password}}@db/app",
    }
    return env, user, password


def test_the_password_inside_a_dsn_is_masked_when_printed_alone(
    dsn_env: tuple[dict[str, str], str, str], tmp_path: Path
) -> None:
    env, user, password = dsn_env
    # ${DSN#*:*:} strips "postgres://USER:", leaving "PASSWORD@db/app"
    result = run_envwrap(["--no-env-file", "--mask", "--", "sh", "-c",
                          'echo "${DSN#*:*:}"; echo "$DSN" | cut -d: -f2 | cut -c3-'],
                         env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout and user not in result.stdout
    assert result.stdout.splitlines() == ["*****@db/app", "*****"]


def test_without_mask_the_program_prints_what_it_likes(
    dsn_env: tuple[dict[str, str], str, str], tmp_path: Path
) -> None:
    """The negative control: the same program, no --mask, shows the password."""
    env, _user, password = dsn_env
    result = run_envwrap(["--no-env-file", "--", "sh", "-c", 'echo "${DSN#*:*:}"'],
                         env=env, cwd=tmp_path)
    assert result.stdout.strip() == f"{password}@db/app"


def test_pieces_are_redacted_from_envwrap_own_messages_too(
    dsn_env: tuple[dict[str, str], str, str], tmp_path: Path
) -> None:
    env, user, password = dsn_env
    result = run_envwrap(["--no-env-file", "--log-level", "debug", "--init", "--",
                          "sh", "-c", "exit 3"], env=env, cwd=tmp_path)
    assert result.returncode == 3
    assert password not in result.stderr and user not in result.stderr
