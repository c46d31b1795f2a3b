"""Orphans are reaped -- as PID 1 and as a child subreaper -- with negative controls."""

from __future__ import annotations

from pathlib import Path

from testsupport import envwrap_command
from testsupport.pid_namespace import UNSHARE, needs_pid_namespace
from testsupport.supervise_support import ORPHANS, run


def verdict(argv: list[str], env: dict[str, str]) -> tuple[str, int, str]:
    result = run(argv, env)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("orphan "), (result.stdout, result.stderr)
    return lines[1], result.returncode, lines[0]


def test_orphans_are_reaped_by_envwrap_as_a_subreaper(
    workdir: Path, base_env: dict[str, str]
) -> None:
    outcome, code, _ = verdict([*envwrap_command(), "--no-env-file", "--init", "--",
                                *ORPHANS, "--exit", "42"], base_env)
    assert outcome == "reaped"
    assert code == 42  # the reaper did not swallow the child's own status


def test_negative_control_a_subreaper_that_does_not_reap_keeps_a_zombie(
    workdir: Path, base_env: dict[str, str]
) -> None:
    outcome, _, _ = verdict([*ORPHANS, "--subreaper"], base_env)
    assert outcome == "zombie"


@needs_pid_namespace
def test_orphans_are_reaped_by_envwrap_as_pid_1(workdir: Path, base_env: dict[str, str]) -> None:
    outcome, code, first = verdict([*UNSHARE, *envwrap_command(), "--no-env-file", "--init",
                                    "--", *ORPHANS, "--exit", "42"], base_env)
    assert first.endswith("parent=1")  # envwrap is PID 1 and adopted the orphan
    assert outcome == "reaped"
    assert code == 42


@needs_pid_namespace
def test_negative_control_pid_1_that_does_not_reap_keeps_a_zombie(
    workdir: Path, base_env: dict[str, str]
) -> None:
    outcome, _, first = verdict([*UNSHARE, *ORPHANS], base_env)
    assert first.endswith("parent=1")
    assert outcome == "zombie"


@needs_pid_namespace
def test_as_pid_1_signals_reach_the_child(workdir: Path, base_env: dict[str, str]) -> None:
    # The kernel drops signals to PID 1 that have no handler; envwrap must
    # still take SIGTERM and pass on the kill signal.
    result = run([*UNSHARE, *envwrap_command(), "--no-env-file", "--init", "--", "sh", "-c",
                  "kill -TERM 1; sleep 30 & wait"], base_env, timeout=30)
    assert result.returncode == 143, result.stderr
