"""The supervisor's handoff state machine with an injected clock (fast; docs/rotation.md).

``--ready-timeout`` is measured on the supervisor's clock: here a fake one the
test moves forward, and a readiness check the test answers by hand, so that a
timeout of 60 s is tested in milliseconds. The children are real processes
(``sh``), the supervisor runs in a subprocess of its own (it blocks signals
for its whole process): this file is also that subprocess's script.
Real-time readiness is covered end to end in test_handoff.py.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

CHILD = ["/bin/sh", "-c", 'echo "started $$ $GEN"; exec sleep 300']


def driver() -> int:
    """The subprocess: prints one line per event; returns what run() returned."""
    from envwrap.process.spec import ProcessSpec
    from envwrap.process.supervisor import Rejected, Supervisor
    from testsupport.ready_by_hand import ReadyByHand
    from testsupport.supervise_support import gone

    now = [1000.0]
    check = ReadyByHand()
    env = {"PATH": "/usr/bin:/bin"}
    ready: list[int] = []  # the PIDs of the "ready" events: the last one is current

    def on_event(event: str, **fields: object) -> None:
        if event == "ready":
            assert isinstance(fields["pid"], int)
            ready.append(fields["pid"])

    out_r, out_w = os.pipe()
    supervisor = Supervisor(ProcessSpec(
        CHILD, {**env, "GEN": "1"}, kill_timeout=5.0, clock=lambda: now[0], ready=check,
        ready_timeout=60.0, stdio=(None, out_w, None), on_event=on_event,
    ))
    started: queue.Queue[tuple[int, str]] = queue.Queue()
    outcomes: queue.Queue[object] = queue.Queue()

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def read() -> None:
        with os.fdopen(out_r) as stream:
            for line in stream:
                _, pid, generation = line.split()
                started.put((int(pid), generation))

    def wait(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)

    def step() -> None:
        """Wake the loop, and return once a whole step after it has run."""
        for _ in range(2):  # the second request is taken in a later step than the first
            done = threading.Event()
            supervisor.send(0, lambda _: done.set())
            assert done.wait(20)

    def scenario() -> None:
        first, _ = started.get(timeout=20)
        check.ready(first)
        supervisor.handoff({**env, "GEN": "2"}, outcomes.put)
        second, generation = started.get(timeout=20)
        assert generation == "2"
        check.watched(second)  # its deadline is set: the clock may move
        say(f"both alive: {not gone(first) and not gone(second)}")
        now[0] += 59.0
        step()
        say(f"after 59s: {outcomes.qsize()} outcome(s)")
        now[0] += 2.0
        step()
        outcome = outcomes.get(timeout=20)
        assert isinstance(outcome, Rejected)
        say(f"second: {outcome.why}")
        wait(lambda: gone(second))
        say(f"first alive: {not gone(first)}; current is first: {ready[-1] == first}")
        supervisor.handoff({**env, "GEN": "3"}, outcomes.put)
        third, generation = started.get(timeout=20)
        check.reports[second](second)  # a late report of the failed one: ignored
        check.ready(third)
        say(f"third: {outcomes.get(timeout=20) == third}; current is third: "
            f"{ready[-1] == third}")
        wait(lambda: gone(first))
        say("first gone")
        supervisor.request_exit(7)

    read_thread = threading.Thread(target=read, daemon=True)
    read_thread.start()
    threading.Thread(target=scenario, daemon=True).start()
    code = supervisor.run()
    say(f"run returned {code}")
    return code


def test_a_candidate_not_ready_in_time_is_retired_and_the_next_one_applied() -> None:
    root = Path(__file__).resolve().parents[2]  # the repository
    result = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, timeout=60, cwd=root,
        env={**os.environ, "PYTHONPATH": f"{root / 'src'}:{root}"}, check=False,
    )
    assert result.stdout.splitlines() == [
        "both alive: True",
        "after 59s: 0 outcome(s)",
        "second: not ready within 60s",
        "first alive: True; current is first: True",
        "third: True; current is third: True",
        "first gone",
        "run returned 7",
    ], result.stderr
    assert result.returncode == 7


if __name__ == "__main__":
    sys.exit(driver())
