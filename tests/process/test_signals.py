"""Supervise mode with real processes and real signals (docs/containers.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testsupport import PROGRAMS, envwrap_command
from testsupport.helpers import wait_until
from testsupport.supervise_support import (
    ECHO,
    Envwrap,
    absent,
    gone,
    kill_quietly,
    run,
    status_fields,
    tree_of,
)

SUPERVISE = {"init": ["--init"], "watch": ["--watch"]}


@pytest.mark.parametrize("mode", SUPERVISE)
def test_every_signal_is_forwarded_once_and_in_order(
    mode: str, workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Envwrap([*SUPERVISE[mode], "--", *ECHO], base_env)
    try:
        ew.ready()
        # ascending numbers: the kernel delivers pending standard signals lowest
        # first, so sending them in that order makes the expected order certain.
        # (SIGCONT is sent on its own: a pending SIGCONT is discarded when a
        # stop signal such as SIGTSTP is generated, and vice versa -- signal(7).)
        burst = [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                 signal.SIGALRM, signal.SIGWINCH]  # SIGTSTP: job control (test_init_signals)
        for signum in burst:
            ew.signal(signum)
        got = [ew.lines.next() for _ in burst]
        assert got == [s.name for s in burst]
        ew.signal(signal.SIGCONT)
        assert ew.lines.next() == "SIGCONT"
        # SIGCHLD is envwrap's own: had it been forwarded, the child would print
        # it before the real-time signal sent after it (and no duplicate of the
        # burst may come in between either)
        ew.signal(signal.SIGCHLD)
        ew.signal(signal.SIGRTMIN + 2)
        assert ew.lines.next() == f"SIG{signal.SIGRTMIN + 2}"
        ew.signal(signal.SIGTERM)
        assert ew.lines.next() == "SIGTERM"
        assert ew.wait() == 128 + signal.SIGTERM
    finally:
        ew.close()


def test_stop_sends_the_kill_signal_then_sigkill_after_the_timeout(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # The child takes SIGUSR1 (its --kill-signal) without dying: after the
    # kill timeout envwrap must escalate, and report the child's death by SIGKILL.
    ew = Envwrap(["--init", "--kill-signal", "SIGUSR1", "--kill-timeout", "0.5s", "--",
                  *ECHO], base_env)
    try:
        child = ew.ready()
        started = time.monotonic()
        ew.signal(signal.SIGTERM)
        assert ew.lines.next() == "SIGUSR1"  # the kill signal, not the SIGTERM envwrap got
        assert ew.wait() == 128 + signal.SIGKILL
        assert time.monotonic() - started >= 0.5
        assert absent(child)
        assert "did not stop within 0.5s" in ew.stderr()
    finally:
        ew.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_envwrap_with_the_childs_code(
    stop: int, workdir: Path, base_env: dict[str, str]
) -> None:
    # SIGINT stays SIGINT (docs/containers.md); the child dies of whatever it got
    ew = Envwrap(["--init", "--", *ECHO, "--die-on", "SIGTERM", "--die-on", "SIGINT"],
                 base_env)
    try:
        child = ew.ready()
        ew.signal(stop)
        assert ew.lines.next() == signal.Signals(stop).name
        assert ew.wait() == 128 + stop
        assert absent(child)
    finally:
        ew.close()


def test_stopping_removes_the_whole_process_tree(workdir: Path, base_env: dict[str, str]) -> None:
    ew = Envwrap(["--init", "--", "sh", "-c", "sleep 300 & sleep 300 & wait"], base_env)
    tree: list[int] = []
    try:
        wait_until(lambda: len(tree_of(ew.pid)) == 3)
        tree = tree_of(ew.pid)
        ew.signal(signal.SIGTERM)
        assert ew.wait() == 128 + signal.SIGTERM
        assert [pid for pid in tree if not absent(pid)] == []
    finally:
        ew.close()
        kill_quietly(tree)


def test_kill_timeout_escalates_to_sigkill_for_the_whole_tree(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # sh and both sleeps ignore SIGTERM (an ignored disposition is inherited)
    script = "trap '' TERM; sleep 300 & sleep 300 & wait"
    ew = Envwrap(["--init", "--kill-timeout", "300ms", "--", "sh", "-c", script], base_env)
    tree: list[int] = []
    try:
        wait_until(lambda: len(tree_of(ew.pid)) == 3)
        tree = tree_of(ew.pid)
        started = time.monotonic()
        ew.signal(signal.SIGTERM)
        assert ew.wait() == 128 + signal.SIGKILL
        assert time.monotonic() - started >= 0.3
        assert [pid for pid in tree if not absent(pid)] == []
    finally:
        ew.close()
        kill_quietly(tree)


def test_processes_that_left_the_group_are_waited_for_and_killed(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # setsid puts the sleep out of the child's process group (killpg misses it);
    # once sh is gone it is an orphan that envwrap, a subreaper, adopted.
    ew = Envwrap(["--init", "--kill-timeout", "300ms", "--", "sh", "-c",
                  "setsid sleep 300 & wait"], base_env)
    tree: list[int] = []
    try:
        wait_until(lambda: len(tree_of(ew.pid)) == 2)
        tree = tree_of(ew.pid)
        ew.signal(signal.SIGTERM)
        assert ew.wait() == 128 + signal.SIGTERM  # sh's own code
        assert [pid for pid in tree if not absent(pid)] == []
    finally:
        ew.close()
        kill_quietly(tree)


def test_a_child_that_exits_ends_envwrap_and_its_group_is_signalled(
    workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Envwrap(["--init", "--", "sh", "-c", "sleep 300 & echo $!; exit 3"], base_env)
    leftover = int(ew.lines.next())
    try:
        assert ew.wait() == 3
        wait_until(lambda: gone(leftover))
    finally:
        ew.close()
        kill_quietly([leftover])


def test_the_child_dies_with_envwrap(workdir: Path, base_env: dict[str, str]) -> None:
    ew = Envwrap(["--init", "--", *ECHO, "--ignore", "SIGTERM", "--ignore", "SIGHUP"], base_env)
    try:
        child = ew.ready()
        ew.signal(signal.SIGKILL)
        ew.proc.wait(10)
        wait_until(lambda: gone(child))
    finally:
        ew.close()


def _signal_state(argv: list[str], env: dict[str, str]) -> dict[str, str]:
    result = run(argv, env)
    assert result.returncode == 0, result.stderr
    return status_fields(result.stdout, "SigBlk", "SigIgn")


@pytest.mark.parametrize("mode", ["--init", "--watch"])
def test_the_child_starts_with_the_signal_state_envwrap_started_with(
    mode: str, workdir: Path, base_env: dict[str, str]
) -> None:
    # A parent that blocks SIGUSR2 and ignores SIGHUP (as nohup does) -- and,
    # unlike the Python runtime, leaves SIGPIPE alone.
    launcher = [sys.executable, str(PROGRAMS / "with_signals.py"),
                "--block", "SIGUSR2", "--ignore", "SIGHUP", "--"]
    probe = ["cat", "/proc/self/status"]  # cat, unlike sh, leaves its mask alone
    direct = _signal_state([*launcher, *probe], base_env)
    wrapped = _signal_state([*launcher, *envwrap_command(), "--no-env-file", mode, "--", *probe],
                            base_env)
    assert wrapped == direct
    assert int(direct["SigBlk"], 16) == 1 << (signal.SIGUSR2 - 1)
    assert int(direct["SigIgn"], 16) == 1 << (signal.SIGHUP - 1)
    plain = _signal_state([*envwrap_command(), "--no-env-file", mode, "--", *probe], base_env)
    assert plain == {"SigBlk": "0" * 16, "SigIgn": "0" * 16}


def test_sigpipe_is_not_left_ignored(workdir: Path, base_env: dict[str, str]) -> None:
    result = run([*envwrap_command(), "--no-env-file", "--init", "--", "sh", "-c",
                  "yes | head -1"], base_env, timeout=10)
    assert (result.returncode, result.stdout) == (0, "y\n")


def test_the_child_inherits_only_stdin_stdout_stderr(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # envwrap itself is given an extra inheritable descriptor
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        proc = subprocess.run(
            [*envwrap_command(), "--no-env-file", "--init", "--", "sh", "-c",
             "ls /proc/$$/fd"],
            env=base_env, capture_output=True, text=True, pass_fds=(write_end,), timeout=30,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == ["0", "1", "2"]


def test_sigchld_ignored_at_start_does_not_lose_the_exit_status(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # With SIGCHLD ignored the kernel would reap children by itself
    launcher = [sys.executable, str(PROGRAMS / "with_signals.py"), "--ignore", "SIGCHLD", "--"]
    wrapped = [*launcher, *envwrap_command(), "--no-env-file", "--init", "--"]
    result = run([*wrapped, "sh", "-c", "exit 3"], base_env)
    assert result.returncode == 3, result.stderr
    # ... and the program still starts with it ignored, as envwrap did
    state = _signal_state([*wrapped, "cat", "/proc/self/status"], base_env)
    assert int(state["SigIgn"], 16) == 1 << (signal.SIGCHLD - 1)
