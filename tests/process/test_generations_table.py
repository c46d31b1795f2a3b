"""The supervisor built from one frozen ProcessSpec; generations as one table.

The handoff scenario runs in a subprocess of its own (the supervisor blocks
signals for its whole process): this file is also that subprocess's script.
The readiness check is answered by hand and the clock never moves, so only
the generations' own exits drive it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

CHILD = ["/bin/sh", "-c", 'echo "started $$ $GEN"; exec sleep 300']


def driver() -> int:
    """The old generation dies during a handoff: the candidate takes over."""
    from envwrap.process.spec import ProcessSpec
    from envwrap.process.supervisor import Supervisor
    from testsupport.ready_by_hand import ReadyByHand

    check = ReadyByHand()
    env = {"PATH": "/usr/bin:/bin"}
    events: list[tuple[str, dict[str, object]]] = []
    out_r, out_w = os.pipe()
    supervisor = Supervisor(ProcessSpec(
        CHILD, {**env, "GEN": "1"}, kill_timeout=5.0, ready=check, ready_timeout=600.0,
        stdio=(None, out_w, None), on_event=lambda name, **fields: events.append((name, fields)),
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

    def scenario() -> None:
        first, _ = started.get(timeout=20)
        check.ready(first)
        supervisor.handoff({**env, "GEN": "2"}, outcomes.put)
        second, generation = started.get(timeout=20)
        say(f"candidate: {generation}")
        os.kill(first, signal.SIGKILL)  # the current generation dies mid-handoff
        delivered: queue.Queue[object] = queue.Queue()
        while True:  # until the loop has reaped the first one
            supervisor.send(0, delivered.put)
            if delivered.get(timeout=20) and ("child_exit", {"pid": first, "code": 137}) in events:
                break
        check.ready(second)
        say(f"handoff outcome is the candidate: {outcomes.get(timeout=20) == second}")
        say(f"events: {[(name, fields.get('reason')) for name, fields in events]}")
        supervisor.send(signal.SIGTERM)  # reaches the new current generation

    threading.Thread(target=read, daemon=True).start()
    threading.Thread(target=scenario, daemon=True).start()
    code = supervisor.run()
    say(f"run returned {code}")
    return code


def test_the_candidate_takes_over_when_the_current_generation_dies_during_a_handoff() -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, timeout=60, cwd=root,
        env={**os.environ, "PYTHONPATH": f"{root / 'src'}:{root}"}, check=False,
    )
    assert result.stdout.splitlines() == [
        "candidate: 2",
        "handoff outcome is the candidate: True",
        "events: [('start', 'initial'), ('ready', None), ('start', 'rotation'), "
        "('child_exit', None), ('ready', None)]",
        "run returned 143",
    ], result.stderr
    assert "the program exited during a handoff; the new generation takes over" in result.stderr
    assert result.returncode == 128 + signal.SIGTERM


def test_a_process_spec_is_frozen_and_keeps_its_own_copies() -> None:
    from envwrap.process.spec import ProcessSpec

    environment = {"A": "1"}
    spec = ProcessSpec(["true"], environment, passed_fds=[3])
    environment["A"] = "2"
    assert spec.environment == {"A": "1"}
    assert spec.argv == ("true",) and spec.passed_fds == (3,)
    with pytest.raises(AttributeError):
        spec.kill_timeout = 1.0  # type: ignore[misc]
    assert "A" not in repr(spec)


if __name__ == "__main__":
    sys.exit(driver())
