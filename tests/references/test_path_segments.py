"""A reference path with '.', '..' or empty segments is malformed (exit 64), so the
path that check, audit and metrics name is the path that was read."""

from __future__ import annotations

from pathlib import Path

import pytest

from envwrap.errors import ReferenceSyntaxError
from envwrap.refs import parse_reference
from testsupport.helpers import run_envwrap


@pytest.mark.parametrize(
    "text",
    [
        "vault://secret/app/../db#password", "vault://secret/./app", "vault://secret//app",
        "vault://secret/app/", "aws-sm://prod/../db", "aws-ssm:///prod//db",
        "ref+file:///run/secrets/../../etc/shadow", "ref+file:///run/./x",
    ],
)
def test_dot_and_empty_segments_are_malformed(text: str) -> None:
    with pytest.raises(ReferenceSyntaxError) as caught:
        parse_reference(text)
    assert caught.value.exit_code == 64


@pytest.mark.parametrize(
    "text",
    ["vault://secret/app/db#password", "aws-ssm:///prod/db/password", "ref+file:///run/x.y",
     "aws-sm://prod/db.v2", "vault://secret/app..x"],
)
def test_dots_inside_a_segment_are_fine(text: str) -> None:
    assert parse_reference(text) is not None


def test_check_refuses_a_dot_segment_naming_the_variable(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    (tmp_path / ".env").write_text("DB_PASSWORD=vault://secret/app/../db#password\n")
    result = run_envwrap(["check"], env=base_env, cwd=tmp_path)
    assert result.returncode == 64
    assert "DB_PASSWORD" in result.stderr and "'..'" in result.stderr
    assert "Traceback" not in result.stderr
