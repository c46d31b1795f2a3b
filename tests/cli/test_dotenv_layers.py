"""``.env`` files are read in order, and ``${VAR}`` in a later file sees what an
earlier one set (``.env.local`` over ``.env``), then the process environment."""

from __future__ import annotations

from pathlib import Path

from testsupport.helpers import assert_not_leaked, canary, run_envwrap


def test_a_later_file_expands_names_an_earlier_file_set(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    password = canary("pw")
    (tmp_path / ".env").write_text(f"HOST=db.internal\nDB_PASSWORD={password}\n")
    (tmp_path / ".env.local").write_text(
        "URL=postgres://app:${DB_PASSWORD}@${HOST}/app\n"
        "REGION=${AWS_REGION:-eu-west-1}\n"
        "HOME_TOO=${FROM_PROCESS}\n"
    )
    env = {**base_env, "FROM_PROCESS": "from-the-process"}
    result = run_envwrap(
        ["--env-file", ".env", "--env-file", ".env.local", "--",
         "sh", "-c", 'printf "%s\\n%s\\n%s\\n" "$URL" "$REGION" "$HOME_TOO"'],
        env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"postgres://app:{password}@db.internal/app", "eu-west-1", "from-the-process",
    ]
    assert_not_leaked(password, result.stderr)


def test_export_shows_the_expanded_value(tmp_path: Path, base_env: dict[str, str]) -> None:
    """The exact repro of the report: ``export`` printed ``URL='postgres:///app'``."""
    (tmp_path / ".env").write_text("HOST=db\n")
    (tmp_path / ".env.local").write_text("URL=postgres://${HOST}/app\n")
    result = run_envwrap(["export", "--env-file", ".env", "--env-file", ".env.local"],
                         env=base_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "URL='postgres://db/app'" in result.stdout


def test_an_earlier_file_does_not_see_a_later_one(tmp_path: Path, base_env: dict[str, str]) -> None:
    """Order matters both ways: expansion never looks ahead."""
    (tmp_path / "a.env").write_text("EARLY=${LATE:-unset}\n")
    (tmp_path / "b.env").write_text("LATE=set\n")
    result = run_envwrap(["export", "--env-file", "a.env", "--env-file", "b.env"],
                         env=base_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "EARLY='unset'" in result.stdout


def test_a_later_file_overrides_and_the_process_environment_still_wins(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    (tmp_path / "a.env").write_text("PORT=1\nNODE_ENV=development\n")
    (tmp_path / "b.env").write_text("PORT=2\nNODE_ENV=test\n")
    result = run_envwrap(
        ["--env-file", "a.env", "--env-file", "b.env", "--",
         "sh", "-c", 'echo "$PORT $NODE_ENV"'],
        env={**base_env, "NODE_ENV": "production"}, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2 production"


def test_a_bad_line_in_the_second_file_names_that_file_and_line(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    secret = canary("bad")
    (tmp_path / "a.env").write_text("A=1\n")
    (tmp_path / "b.env").write_text(f"B=2\nC='{secret}\n")
    result = run_envwrap(["--env-file", "a.env", "--env-file", "b.env", "--", "true"],
                         env=base_env, cwd=tmp_path)
    assert result.returncode == 78
    assert "b.env" in result.stderr and "line 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert_not_leaked(secret, result.stderr, result.stdout)
