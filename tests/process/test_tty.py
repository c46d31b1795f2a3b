"""Interactive programs under supervision: the child owns the terminal (job control)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from testsupport.supervise_support import ECHO, Lines, gone
from testsupport.tty import INTR, SUSP, close, spawn_in_pty, wait_status


@pytest.mark.parametrize("mode", ["--init", "--watch"])
def test_the_child_owns_the_terminal_and_ctrl_c_reaches_it(
    mode: str, workdir: Path, base_env: dict[str, str]
) -> None:
    pid, master = spawn_in_pty([mode, "--", *ECHO, "--tty", "--die-on", "SIGINT"], base_env)
    try:
        lines = Lines(master)
        tty = lines.until("tty").split()
        child = int(lines.until("ready").split()[1])
        # its own process group, which is the terminal's foreground group
        assert tty == ["tty", f"pgrp={child}", f"fg={child}"]
        assert child != pid
        os.write(master, INTR)
        assert lines.next().endswith("SIGINT")  # after the terminal's echo of ^C
        assert os.waitstatus_to_exitcode(wait_status(pid)) == 128 + signal.SIGINT
    finally:
        close(pid, master)


def test_ctrl_z_stops_child_and_envwrap_and_fg_resumes_both(
    workdir: Path, base_env: dict[str, str]
) -> None:
    pid, master = spawn_in_pty(["--init", "--", *ECHO, "--default", "SIGTSTP", "--tty",
                                "--die-on", "SIGINT"], base_env)
    try:
        lines = Lines(master)
        child = int(lines.until("ready").split()[1])
        os.write(master, SUSP)
        # the child stops; envwrap takes the terminal back and stops itself, so
        # that the shell (this test) sees its job stopped
        status = wait_status(pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        assert os.tcgetpgrp(master) == pid
        # `fg`: the shell gives envwrap's group the terminal and continues it
        os.kill(pid, signal.SIGCONT)
        lines.until("SIGCONT")
        assert os.tcgetpgrp(master) == child
        os.write(master, INTR)
        assert lines.next().endswith("SIGINT")
        assert os.waitstatus_to_exitcode(wait_status(pid)) == 128 + signal.SIGINT
    finally:
        close(pid, master)


def test_a_background_envwrap_leaves_the_terminal_alone(
    workdir: Path, base_env: dict[str, str]
) -> None:
    leader, master = spawn_in_pty(["--init", "--", *ECHO, "--tty"], base_env, background=True)
    try:
        lines = Lines(master)
        session = int(lines.until("leader").split()[1])
        tty = lines.until("tty").split()
        child = int(lines.until("ready").split()[1])
        assert tty == ["tty", f"pgrp={child}", f"fg={session}"]
        assert os.tcgetpgrp(master) == session
        # stop the job (envwrap) the way its shell would, before the session goes
        os.kill(psutil.Process(child).ppid(), signal.SIGTERM)
        assert os.waitstatus_to_exitcode(wait_status(leader)) == 128 + signal.SIGTERM
        assert gone(child)
    finally:
        close(leader, master)
