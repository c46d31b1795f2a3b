"""``--render`` and ``--audit-log`` never write through a symbolic link in any component
of their path, never block on a FIFO, and leave their files mode 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from testsupport.helpers import canary, run_envwrap


@pytest.fixture
def secret_env(tmp_path: Path, base_env: dict[str, str]) -> tuple[dict[str, str], str]:
    value = canary("pw")
    (tmp_path / "pw").write_text(value)
    return {**base_env, "DB_PASSWORD": f"ref+file://{tmp_path}/pw"}, value


def test_render_refuses_a_symlink_in_an_intermediate_folder(
    tmp_path: Path, secret_env: tuple[dict[str, str], str]
) -> None:
    env, value = secret_env
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "app").symlink_to(victim)
    result = run_envwrap(["sidecar", "--no-env-file", "--render",
                          str(tmp_path / "shared/app/sub/secrets.env")],
                         env=env, cwd=tmp_path, timeout=30)
    assert result.returncode == 78, result.stderr
    assert "symbolic link" in result.stderr and "shared/app" in result.stderr
    assert list((victim / "sub").iterdir()) == []
    assert value not in result.stderr


def test_render_through_real_folders_works_and_is_0600(
    tmp_path: Path, secret_env: tuple[dict[str, str], str]
) -> None:
    """The positive control of the test above: the same layout without the link."""
    env, value = secret_env
    (tmp_path / "shared/app/sub").mkdir(parents=True)
    target = tmp_path / "shared/app/sub/secrets.env"
    result = run_envwrap(["--no-env-file", "--init", "--watch", "--render", str(target), "--",
                          "sh", "-c", f'test -s "{target}"'], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert value in target.read_text()


def test_render_refuses_a_fifo_at_its_path_without_blocking(
    tmp_path: Path, secret_env: tuple[dict[str, str], str]
) -> None:
    env, _ = secret_env
    os.mkfifo(tmp_path / "secrets.env")
    result = run_envwrap(["--no-env-file", "--watch", "--render", str(tmp_path / "secrets.env"),
                          "--", "true"], env=env, cwd=tmp_path, timeout=20)
    assert result.returncode == 78 and "not a regular file" in result.stderr


def test_audit_log_refuses_a_planted_symlink(
    tmp_path: Path, secret_env: tuple[dict[str, str], str]
) -> None:
    env, _ = secret_env
    target = tmp_path / "somebody-elses-file"
    target.write_text("untouched\n")
    (tmp_path / "audit.log").symlink_to(target)
    result = run_envwrap(["--no-env-file", "--audit-log", str(tmp_path / "audit.log"), "--",
                          "true"], env=env, cwd=tmp_path)
    assert result.returncode == 78 and "symbolic link" in result.stderr
    assert target.read_text() == "untouched\n"


def test_audit_log_refuses_a_symlinked_folder(
    tmp_path: Path, secret_env: tuple[dict[str, str], str]
) -> None:
    env, _ = secret_env
    (tmp_path / "real").mkdir()
    (tmp_path / "logs").symlink_to(tmp_path / "real")
    result = run_envwrap(["--no-env-file", "--audit-log", str(tmp_path / "logs/audit.log"), "--",
                          "true"], env=env, cwd=tmp_path)
    assert result.returncode == 78 and "symbolic link" in result.stderr
    assert list((tmp_path / "real").iterdir()) == []


def test_audit_log_does_not_block_on_a_fifo(
    tmp_path: Path, secret_env: tuple[dict[str, str], str]
) -> None:
    env, _ = secret_env
    os.mkfifo(tmp_path / "audit.log")
    result = run_envwrap(["--no-env-file", "--audit-log", str(tmp_path / "audit.log"), "--",
                          "true"], env=env, cwd=tmp_path, timeout=20)
    assert result.returncode == 78 and "not a regular file" in result.stderr


def test_audit_log_is_left_0600_even_if_it_was_world_writable(
    tmp_path: Path, secret_env: tuple[dict[str, str], str]
) -> None:
    env, value = secret_env
    log = tmp_path / "audit.log"
    log.write_text("")
    log.chmod(0o666)
    result = run_envwrap(["--no-env-file", "--audit-log", str(log), "--", "true"],
                         env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert '"event": "access"' in log.read_text() and value not in log.read_text()
