"""Rotations under continuous HTTP load (docs/rotation.md, issue 11): nothing is lost.

A bounded load generator (``testsupport/http_load.py``) sends requests on fresh
connections to the ``--listen`` socket while the secret is rotated several
times in a row. With ``--on-change handoff`` no request may fail; with the plain
``restart`` mode and ``--listen``, no connection may be refused (they wait in
the backlog that envwrap keeps open). The child is the one of
``testsupport/handoff.py``: it takes ``$READY_DELAY`` seconds to become ready,
like the team's Node service, and finishes the request in hand on SIGTERM.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testsupport.handoff import HANDOFF, Run
from testsupport.helpers import canary, fp, wait_until
from testsupport.http_load import HttpLoad, Window, summarize

pytestmark = pytest.mark.slow

ROTATIONS = 5


def rotate_under_load(run: Run, first: str, count: int, applied: str) -> tuple[Window, list[str]]:
    """Rotate ``count`` times under load, each time until ``applied`` events say it took."""
    values = [first]
    run.started(first)
    run.wait_event("ready")
    with HttpLoad("127.0.0.1", run.port, connections=4, rate=150, timeout=10,
                  max_seconds=120) as load:
        assert load.wait_answers(20, timeout=20), "the first generation never answered"
        begin = time.monotonic()
        for number in range(1, count + 1):
            value = canary("good")
            values.append(value)
            run.rotate(value)
            run.started(value)
            wait_until(lambda n=number: len([e for e in run.events("rotation")
                                              if e.get("outcome") == applied]) >= n
                       and len(run.events("ready")) >= n + 1, timeout=30)
        end = time.monotonic()
        # the last generation answers before the load stops
        since = time.monotonic()
        assert load.wait_answers(20, timeout=20, since=since)
    window = summarize(load.samples(), begin, end)
    last = [s for s in load.samples() if s.started >= since and s.pid is not None]
    assert last, "no answer from the last generation"
    return window, values


def test_handoff_loses_no_request_over_a_burst_of_rotations(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first = canary("good")
    # A new generation needs a whole second to be ready: any stop-then-start
    # leaves the socket unanswered at least that long; a handoff never does.
    run = Run(tmp_path, base_env, first, *HANDOFF, env={"READY_DELAY": "1.0"})
    runs.append(run)
    window, values = rotate_under_load(run, first, ROTATIONS, "applied")
    assert window.requests > 50, window
    assert window.failed == 0, window
    assert window.longest_gap < 1.0, window
    # every generation answered in turn: the load really crossed each handoff
    assert len(window.pids) >= ROTATIONS, window
    assert run.get()[1] == fp(values[-1])
    assert run.stop() == 0
    run.assert_clean(*values)


def test_restart_with_listen_refuses_no_connection(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first = canary("good")
    run = Run(tmp_path, base_env, first, "--listen", "127.0.0.1:0",
              env={"READY_DELAY": "0.4"})
    runs.append(run)
    window, values = rotate_under_load(run, first, ROTATIONS, "applied")
    # each restart leaves the socket unanswered for a while: requests wait, few are sent
    assert window.requests >= 2 * ROTATIONS, window
    assert window.outcomes.get("refused", 0) == 0, window
    assert window.failed == 0, window
    assert run.get()[1] == fp(values[-1])
    assert run.stop() == 0
    run.assert_clean(*values)
