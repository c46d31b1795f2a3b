"""Handoff with ``--ready log:REGEX`` (docs/rotation.md): a line counts for the generation
that printed it, and every line still reaches envwrap's output (masked with --mask)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from testsupport.handoff import Run
from testsupport.helpers import canary, fp, wait_until

pytestmark = pytest.mark.slow

#: the child prints "ready PID FP" when ready, "signal PID SIGUSR1" on SIGUSR1
LOG_HANDOFF = ("--on-change", "handoff", "--listen", "127.0.0.1:0",
               "--ready", r"log:^(ready|signal) \d+")


def test_the_new_generation_is_ready_when_it_prints_the_line(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, second = canary("good"), canary("good")
    run = Run(tmp_path, base_env, first, *LOG_HANDOFF, "--mask",
              env={"READY_DELAY": "1", "PRINT_SECRET": "1"})
    runs.append(run)
    old = run.started(first)
    run.wait_event("ready", pid=old)
    run.rotate(second)
    new = run.started(second)
    run.wait_line(f"signal {old} SIGTERM")  # retired once the new one printed its line
    assert run.line_index(f"ready {new} {fp(second)}") < run.line_index(f"signal {old} SIGTERM")
    run.wait_event("rotation", outcome="applied")
    run.wait_line(f"exiting {old}")
    assert run.get() == (new, fp(second))
    # every line reached envwrap's stdout, through --mask
    assert f"value {old} *****" in run.out.text() and f"value {new} *****" in run.out.text()
    assert run.stop() == 0
    run.assert_clean(first, second)


def test_a_matching_line_from_the_old_generation_does_not_make_the_new_one_ready(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, hanging = canary("good"), canary("hang")
    run = Run(tmp_path, base_env, first, *LOG_HANDOFF, "--ready-timeout", "3s")
    runs.append(run)
    old = run.started(first)
    run.wait_event("ready", pid=old)
    run.rotate(hanging)
    new = run.started(hanging)
    wait_until(lambda: f"hanging {new} " in run.out.text(), timeout=20)
    os.kill(run.process.pid, signal.SIGUSR1)  # forwarded to the current (old) generation
    run.wait_line(f"signal {old} SIGUSR1")  # a line that matches, from the old generation
    run.wait_event("rotation", outcome="rolled_back")
    wait_until(lambda: "not ready within 3s" in run.err.text(), timeout=5)  # stderr is read by a thread
    assert not [e for e in run.events("ready") if e.get("pid") == new]
    run.wait_line(f"exiting {new}")  # the candidate is retired; the old one keeps serving
    assert run.get() == (old, fp(first))
    assert run.stop() == 0
    run.assert_clean(first, hanging)
