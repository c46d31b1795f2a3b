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
    # (SIGPIPE, SIGXFSZ and the faults, SIGSEGV..., are forwarded when another
    # process sends them, as dumb-init does; envwrap's own are not: tested below)
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
    assert len(FORWARDED_AS_IS) >= 20  # the table above did not swallow the test
    assert {signal.SIGSEGV, signal.SIGABRT, signal.SIGPIPE} <= set(FORWARDED_AS_IS)
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


# --- faults and SIGPIPE: forwarded when sent, envwrap's own when not -------------------

FAULT = [sys.executable, str(PROGRAMS / "with_fault.py")]


@pytest.mark.parametrize(("kind", "signum"), [("segv", signal.SIGSEGV),
                                              ("abort", signal.SIGABRT)])
def test_a_real_fault_in_envwrap_still_ends_it_by_that_signal(
    kind: str, signum: int, monkeypatch: pytest.MonkeyPatch, workdir: Path,
    base_env: dict[str, str],
) -> None:
    # envwrap blocks the faults to take the ones other processes send; one of
    # its own must still kill it (the kernel forces it through the block),
    # and the program goes with it (PDEATHSIG).
    monkeypatch.setattr(support, "envwrap_command", lambda: [*FAULT, kind])
    ew = Envwrap(["--init", "--", *ECHO], base_env,
                 prefix=["prlimit", "--core=0", "--"])  # no core file left behind
    try:
        child = ew.ready()
        assert_same_signal(ew, signal.SIGUSR1)  # the seam forwards the others
        ew.signal(signal.SIGUSR2)  # the planted fault
        assert ew.proc.wait(15) == -signum
        wait_until(lambda: support.gone(child), timeout=10)
    finally:
        ew.close()


def test_negative_control_a_sent_fault_is_forwarded_not_fatal(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # the same signal sent by another process is the program's (dumb-init's suite)
    ew = Envwrap(["--init", "--", *ECHO], base_env)
    try:
        ew.ready()
        for signum in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            assert_same_signal(ew, signum)
        assert ew.proc.poll() is None
    finally:
        ew.close()


def test_envwraps_own_broken_pipe_is_not_forwarded(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # envwrap's stderr is a pipe nobody reads any more: its debug lines raise
    # SIGPIPE (with envwrap's own PID), which must not reach the program, while
    # a SIGPIPE that someone sends still does.
    ew = Envwrap(["--init", "--log-level", "debug", "--", *ECHO], base_env)
    try:
        ew.ready()
        assert ew.proc.stderr is not None
        ew.proc.stderr.close()
        for _ in range(3):  # each forward writes a debug line to the broken pipe
            assert_same_signal(ew, signal.SIGHUP)
        assert_same_signal(ew, signal.SIGPIPE)  # sent by this test: forwarded
        assert_same_signal(ew, signal.SIGUSR1)  # and nothing queued in between
    finally:
        ew.close()


def test_without_a_terminal_a_program_that_catches_sigtstp_is_stopped_too(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # ECHO catches SIGTSTP; with no terminal it gets SIGSTOP (as in dumb-init),
    # so the whole job is stopped, not envwrap alone.
    ew = Envwrap(["--init", "--", *ECHO], base_env)
    try:
        child = ew.ready()
        for signum in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            ew.signal(signum)
            wait_until(lambda: stopped(child) and stopped(ew.pid), timeout=10)
            ew.signal(signal.SIGCONT)
            assert ew.lines.next() == "SIGCONT"  # the job-control signal never reached it
            wait_until(lambda: not stopped(child) and not stopped(ew.pid), timeout=10)
    finally:
        ew.close()
