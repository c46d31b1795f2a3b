"""Signals as a good init passes them on: each as itself, job control, PID 1, macOS fallback.

Every test here has a negative control that shows its check is able to fail
(tini's and dumb-init's suites do the same).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import testsupport.supervise_support as support
from testsupport import PROGRAMS
from testsupport.helpers import wait_until
from testsupport.pid_namespace import UNSHARE, needs_pid_namespace
from testsupport.supervise_support import ECHO, Envwrap
from testsupport.tty import INTR, SUSP, close, spawn_in_pty, wait_status

#: signals 1-31 that cannot or must not be checked with "the child got the same one":
EXCLUDED = {
    signal.SIGKILL: "cannot be caught",
    signal.SIGSTOP: "cannot be caught",
    signal.SIGCHLD: "envwrap's own: it means a child changed state, and is never forwarded",
    # job control: forwarded too, then envwrap stops itself (tested below)
    signal.SIGTSTP: "job control",
    signal.SIGTTIN: "job control",
    signal.SIGTTOU: "job control",
    # envwrap ignores these for itself, as CPython does: a broken pipe in its own
    # writes would otherwise be forwarded as if someone had sent it
    signal.SIGPIPE: "envwrap's own EPIPE",
    signal.SIGXFSZ: "envwrap's own EFBIG",
    # synchronous faults stay at their defaults, as in tini: a kill -SEGV ends
    # envwrap (with a core dump), and the program with it (PDEATHSIG)
    signal.SIGSEGV: "fault", signal.SIGBUS: "fault", signal.SIGFPE: "fault",
    signal.SIGILL: "fault", signal.SIGTRAP: "fault", signal.SIGSYS: "fault",
    signal.SIGABRT: "fault",
    # the two stop signals end envwrap: each gets a run of its own below
    signal.SIGTERM: "stops envwrap", signal.SIGINT: "stops envwrap",
}
FORWARDED_AS_IS = [s for s in range(1, 32) if s not in EXCLUDED]


def received(ew: Envwrap, sent: int) -> str:
    ew.signal(sent)
    return ew.lines.next()


def assert_same_signal(ew: Envwrap, sent: int) -> None:
    got = received(ew, sent)
    assert got == signal.Signals(sent).name, f"sent {signal.Signals(sent).name}, child got {got}"


def test_every_catchable_signal_reaches_the_child_as_itself(
    workdir: Path, base_env: dict[str, str]
) -> None:
    assert len(FORWARDED_AS_IS) >= 10  # the table above did not swallow the test
    ew = Envwrap(["--init", "--", *ECHO], base_env)
    try:
        ew.ready()
        for signum in FORWARDED_AS_IS:
            assert_same_signal(ew, signum)
    finally:
        ew.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("mode", ["--init", "--watch"])
def test_a_stop_signal_reaches_the_child_as_itself_and_ends_envwrap(
    mode: str, signum: int, workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Envwrap([mode, "--kill-timeout", "30s", "--", *ECHO, "--die-on", signum.name],
                 base_env)
    try:
        ew.ready()
        assert_same_signal(ew, signum)
        assert ew.wait() == 128 + signum
    finally:
        ew.close()


def test_a_stop_signal_still_escalates_after_the_kill_timeout(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # SIGINT is forwarded as SIGINT but still starts the stop deadline
    ew = Envwrap(["--init", "--kill-timeout", "0.3s", "--", *ECHO, "--die-on", "SIGUSR1"],
                 base_env)
    try:
        ew.ready()
        assert_same_signal(ew, signal.SIGINT)
        assert ew.wait() == 128 + signal.SIGKILL
        assert "did not stop within 0.3s of SIGINT" in ew.stderr()
    finally:
        ew.close()


def test_negative_control_a_remapped_signal_fails_the_check(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # The old behaviour (SIGINT turned into the kill signal) is a remapping like
    # this one: SIGTERM to envwrap becomes --kill-signal SIGUSR2.
    ew = Envwrap(["--init", "--kill-signal", "SIGUSR2", "--kill-timeout", "30s", "--", *ECHO,
                  "--die-on", "SIGUSR2"], base_env)
    try:
        ew.ready()
        with pytest.raises(AssertionError, match="child got SIGUSR2"):
            assert_same_signal(ew, signal.SIGTERM)
    finally:
        ew.close()


# --- job control -----------------------------------------------------------------------


def state(pid: int) -> str:
    """The one-letter state of /proc/PID/status (R, S, T, Z...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    raise AssertionError(f"no State in /proc/{pid}/status")


def stopped(pid: int) -> bool:
    return state(pid) == "T"


JOB_ECHO = [*ECHO, "--default", "SIGTSTP", "--default", "SIGTTIN", "--default", "SIGTTOU"]


@pytest.mark.parametrize("signum", [signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU])
def test_job_control_stops_the_child_and_envwrap_and_sigcont_resumes_both(
    signum: int, workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Envwrap(["--init", "--", *JOB_ECHO], base_env)
    try:
        child = ew.ready()
        ew.signal(signum)
        wait_until(lambda: stopped(child) and stopped(ew.pid), timeout=10)
        ew.signal(signal.SIGCONT)
        assert ew.lines.next() == "SIGCONT"  # forwarded, so the child runs again
        wait_until(lambda: not stopped(child) and not stopped(ew.pid), timeout=10)
        assert_same_signal(ew, signal.SIGUSR1)  # and envwrap still forwards
    finally:
        ew.close()


def test_negative_control_a_child_stopped_alone_leaves_envwrap_running(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # The program stopped behind envwrap's back (no terminal to hand back):
    # envwrap keeps running, so "envwrap stopped" above is not a given.
    ew = Envwrap(["--init", "--", *JOB_ECHO], base_env)
    try:
        child = ew.ready()
        os.kill(child, signal.SIGSTOP)
        wait_until(lambda: stopped(child), timeout=10)
        assert_same_signal(ew, signal.SIGCONT)  # envwrap reacts, so it was not stopped
        assert not stopped(ew.pid)
    finally:
        ew.close()


@needs_pid_namespace
def test_ctrl_z_as_pid_1_resumes_the_program(workdir: Path, base_env: dict[str, str]) -> None:
    # Nobody can resume a stopped PID 1 (or its program) from outside its
    # namespace, so envwrap resumes the program instead of leaving it hanging;
    # the same Ctrl-Z outside a namespace stops both (test_tty).
    argv = ["--init", "--", *ECHO, "--default", "SIGTSTP", "--die-on", "SIGINT"]
    pid, master = spawn_in_pty(argv, base_env, prefix=UNSHARE)
    try:
        lines = support.Lines(master)
        lines.until("ready")
        os.write(master, SUSP)
        assert lines.until("SIGCONT").endswith("SIGCONT")
        os.write(master, INTR)
        assert lines.until("SIGINT").endswith("SIGINT")
        assert os.waitstatus_to_exitcode(wait_status(pid)) == 128 + signal.SIGINT
    finally:
        close(pid, master)


# --- the wakeup-pipe fallback (macOS), forced on Linux through its seam -----------------


@pytest.fixture
def wakeup_pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    wrapper = [sys.executable, str(PROGRAMS / "with_wakeup_pipe.py")]
    monkeypatch.setattr(support, "envwrap_command", lambda: wrapper)
    yield


def test_fallback_forwards_each_signal_as_itself(
    wakeup_pipe: None, workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Envwrap(["--init", "--kill-timeout", "30s", "--", *ECHO, "--die-on", "SIGINT"],
                 base_env)
    try:
        assert ew.lines.until("signals:") == "signals: wakeup pipe"
        ew.ready()
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT, signal.SIGWINCH):
            assert_same_signal(ew, signum)
        assert_same_signal(ew, signal.SIGINT)
        assert ew.wait() == 128 + signal.SIGINT
    finally:
        ew.close()


def test_fallback_job_control_stops_and_resumes_both(
    wakeup_pipe: None, workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Envwrap(["--init", "--", *JOB_ECHO], base_env)
    try:
        assert ew.lines.until("signals:") == "signals: wakeup pipe"
        child = ew.ready()
        ew.signal(signal.SIGTSTP)
        wait_until(lambda: stopped(child) and stopped(ew.pid), timeout=10)
        ew.signal(signal.SIGCONT)
        assert ew.lines.next() == "SIGCONT"
        wait_until(lambda: not stopped(child) and not stopped(ew.pid), timeout=10)
    finally:
        ew.close()
