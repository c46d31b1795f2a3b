"""Run envwrap at debug level for its child's environment, or for its failure.

Either way, no secret value named by the caller may show on envwrap's output.
"""

from __future__ import annotations

from pathlib import Path

from testsupport.fixtures_aws import child_environment
from testsupport.helpers import assert_not_leaked, run_envwrap

DEBUG = ["--no-env-file", "--log-level", "debug"]


def resolve(env: dict[str, str], *secrets: str, args: tuple[str, ...] = ()) -> dict[str, str]:
    """Run ``envwrap -- env -0`` at debug level; the child's environment.

    Fails when envwrap fails or when any of ``secrets`` shows on its stderr.
    """
    result = run_envwrap([*DEBUG, *args, "--", "env", "-0"], env=env)
    assert_not_leaked_all(secrets, result.stderr)
    assert result.returncode == 0, result.stderr
    return child_environment(result.stdout)


def fail(
    env: dict[str, str], *secrets: str, code: int, args: tuple[str, ...] = (), workdir: Path
) -> str:
    """Run envwrap expecting exit ``code`` before the child starts; its stderr."""
    marker = workdir / "child-started"
    result = run_envwrap([*DEBUG, *args, "--", "touch", str(marker)], env=env)
    assert_not_leaked_all(secrets, result.stderr, result.stdout)
    assert result.returncode == code, result.stderr
    assert not marker.exists(), "the child was started although a reference failed"
    return result.stderr


def assert_not_leaked_all(secrets: tuple[str, ...], *texts: str) -> None:
    for value in secrets:
        assert_not_leaked(value, *texts)
