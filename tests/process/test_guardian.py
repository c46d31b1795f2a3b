"""A SIGKILLed envwrap leaves nothing behind: grandchildren in the program's group and
ones that escaped with setsid are killed too (envwrap.process.guardian, cgroup v2)."""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

import testsupport.supervise_support as support
from envwrap.process import guardian
from testsupport import PROGRAMS
from testsupport.helpers import wait_until
from testsupport.supervise_support import Envwrap, gone, kill_quietly, tree_of

# a program that leaves a grandchild in its group and one in a session of its own
LEAVER = ["sh", "-c", "sleep 300 & setsid sleep 300 & echo ready $$; wait"]


@functools.cache
def cgroups_writable() -> bool:
    parent = guardian.own_cgroup()
    if parent is None:
        return False
    probe = os.path.join(parent, f"envwrap-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def descendants(ew: Envwrap) -> list[int]:
    """The program and its two sleeps, once all three run."""
    def found() -> list[int]:
        tree = tree_of(ew.pid)
        sleeps = [p for p in tree if psutil.Process(p).name() == "sleep"]
        return tree if len(sleeps) == 2 else []

    pids = wait_until(found, timeout=10)
    assert isinstance(pids, list)
    return pids


def in_group(pid: int, envwrap: int) -> bool:
    try:
        return f"/envwrap-{envwrap}\n" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def sigkill_envwrap(ew: Envwrap, guarded: bool = True) -> list[int]:
    ew.lines.until("ready")
    pids = descendants(ew)
    if guarded:
        # the guardian moves what started before envwrap itself was moved; a
        # SIGKILL within those first milliseconds is the documented window
        wait_until(lambda: all(in_group(pid, ew.pid) for pid in pids), timeout=10)
    os.kill(ew.pid, signal.SIGKILL)
    ew.proc.wait(10)
    return pids


@pytest.mark.skipif("not cgroups_writable()", reason="no writable cgroup v2 here")
@pytest.mark.parametrize("mode", ["--init", "--watch"])
def test_a_sigkilled_envwrap_leaves_no_process_behind(
    mode: str, workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Envwrap([mode, "--", *LEAVER], base_env)
    pids: list[int] = []
    try:
        pids = sigkill_envwrap(ew)
        wait_until(lambda: all(gone(pid) for pid in pids), timeout=10)
        group = os.path.join(guardian.own_cgroup() or "", f"envwrap-{ew.pid}")
        wait_until(lambda: not os.path.exists(group), timeout=10)  # and no empty group left
    finally:
        kill_quietly(pids)
        ew.close()


@pytest.mark.skipif("not cgroups_writable()", reason="no writable cgroup v2 here")
def test_negative_control_without_the_guardian_the_grandchildren_survive(
    workdir: Path, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(support, "envwrap_command",
                        lambda: [sys.executable, str(PROGRAMS / "without_guardian.py")])
    ew = Envwrap(["--init", "--", *LEAVER], base_env)
    pids: list[int] = []
    try:
        pids = sigkill_envwrap(ew, guarded=False)
        program = min(pids)  # started first: the sh
        wait_until(lambda: gone(program), timeout=10)  # PDEATHSIG reaches the program only
        survivors = [pid for pid in pids if not gone(pid)]
        assert len(survivors) == 2
    finally:
        kill_quietly(pids)
        ew.close()


@pytest.mark.skipif("not cgroups_writable()", reason="no writable cgroup v2 here")
def test_a_normal_exit_keeps_what_the_program_chose_to_leave_running(
    workdir: Path, base_env: dict[str, str]
) -> None:
    # not a SIGKILL: the program ends on its own and its setsid daemon lives on,
    # moved out of envwrap's group, which is removed
    # (the program waits until the daemon has its own session -- field 6 of
    # /proc/PID/stat -- or the group's SIGTERM at the program's exit would reach it)
    leave_daemon = ('setsid sleep 300 >/dev/null 2>&1 & '
                    'until [ "$(cut -d" " -f6 /proc/$!/stat)" = "$!" ]; do :; done; '
                    'echo ready $!')
    ew = Envwrap(["--init", "--", "sh", "-c", leave_daemon], base_env)
    daemon = 0
    try:
        daemon = int(ew.lines.until("ready").split()[1])
        assert ew.wait() == 0
        group = os.path.join(guardian.own_cgroup() or "", f"envwrap-{ew.pid}")
        wait_until(lambda: not os.path.exists(group), timeout=10)
        assert not gone(daemon)
        assert f"envwrap-{ew.pid}" not in Path(f"/proc/{daemon}/cgroup").read_text()
    finally:
        kill_quietly([daemon] if daemon else [])


def test_without_a_cgroup_the_guardian_kills_the_descendants_it_has_seen(
    workdir: Path, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fallback notes envwrap's descendants every 50 ms here (1 s normally);
    # the negative control above is the same run without any guardian
    monkeypatch.setattr(support, "envwrap_command",
                        lambda: [sys.executable, str(PROGRAMS / "with_guardian_fallback.py")])
    ew = Envwrap(["--init", "--", *LEAVER], base_env)
    pids: list[int] = []
    try:
        ew.lines.until("ready")
        pids = descendants(ew)
        time.sleep(0.5)  # ten of the guardian's looks: the fallback's documented window
        assert not any(in_group(pid, ew.pid) for pid in pids)  # really no cgroup
        os.kill(ew.pid, signal.SIGKILL)
        ew.proc.wait(10)
        wait_until(lambda: all(gone(pid) for pid in pids), timeout=10)
    finally:
        kill_quietly(pids)
        ew.close()
