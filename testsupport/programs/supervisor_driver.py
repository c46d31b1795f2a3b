"""Drive a Supervisor in-process the way the rotation will: requests from a thread.

    supervisor_driver.py SCENARIO LOCKFILE

The program is signal_echo.py holding an exclusive lock (with a grandchild that
shares it and ignores SIGTERM): a generation that started while another still
ran would print ``overlap``. Its output reaches this process through a pipe
given as the program's stdout (the ``--mask`` seam). Everything is reported
on stdout, one event per line; the exit code is what ``run()`` returned.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading

from envwrap.process.spec import ProcessSpec
from envwrap.process.supervisor import Supervisor

HERE = os.path.dirname(os.path.abspath(__file__))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(scenario: str, lock: str) -> int:
    # the interpreter by name, found in the child's PATH, so that a replacement
    # environment without it fails to start (127)
    python = os.path.basename(sys.executable)
    argv = [python, os.path.join(HERE, "signal_echo.py"), "--lock", lock, "--grandchild"]
    base = {"PATH": os.path.dirname(sys.executable)}
    out_r, out_w = os.pipe()
    # constructed before any thread: it blocks the signals it takes
    supervisor = Supervisor(ProcessSpec(argv, {**base, "ECHO_TAG": "gen=1"}, kill_timeout=0.3,
                                        stdio=(None, out_w, None)))
    events: queue.Queue[tuple[str, object]] = queue.Queue()
    generations: list[tuple[int, int]] = []  # (pid, grandchild) per generation

    def read_child() -> None:
        with os.fdopen(out_r, "r") as stream:
            for line in stream:
                events.put(("child", line.strip()))

    def expect(kind: str, starts: str = "") -> object:
        while True:
            got_kind, value = events.get(timeout=20)
            if got_kind == "child":
                say(f"child: {value}")
                if str(value) == "overlap":
                    say("OVERLAP")
            if got_kind == kind and str(value).startswith(starts):
                return value

    def ready(tag: str) -> None:
        line = str(expect("child", "ready"))
        fields = line.split()
        assert fields[-1] == tag, line
        generations.append((int(fields[1]), int(fields[2].split("=")[1])))

    def replaced(pid: object) -> None:
        # runs on the main thread, right after the new generation started:
        # the previous one, grandchild included, must be gone and reaped
        old_pid, old_grandchild = generations[-1]
        events.put(("replaced", (pid, alive(old_pid), alive(old_grandchild))))

    def control() -> None:
        try:
            ready("gen=1")
            if scenario == "replace-fails":
                supervisor.replace({"PATH": "/nonexistent", "ECHO_TAG": "gen=2"},
                                   done=lambda pid: events.put(("replaced", pid)))
                say(f"replaced {expect('replaced')}")
                return
            supervisor.replace({**base, "ECHO_TAG": "gen=2"}, done=replaced)
            say(f"replaced {expect('replaced')}")
            ready("gen=2")
            # two requests in a row are merged: the last environment wins
            supervisor.replace({**base, "ECHO_TAG": "gen=3"}, done=replaced)
            supervisor.replace({**base, "ECHO_TAG": "gen=4"}, done=replaced)
            say(f"replaced {expect('replaced')}")
            say(f"replaced {expect('replaced')}")
            ready("gen=4")
            supervisor.send(signal.SIGUSR1, done=lambda ok: events.put(("sent", ok)))
            say(f"sent {expect('sent')}")
            expect("child", "SIGUSR1")
            supervisor.request_exit(7, done=lambda code: events.put(("exiting", code)))
            say(f"exiting {expect('exiting')}")
        except Exception as exc:  # report, and make run() return
            say(f"ERROR {exc!r}")
            supervisor.request_exit(70)

    reader = threading.Thread(target=read_child, daemon=True)
    controller = threading.Thread(target=control, daemon=True)
    reader.start()
    controller.start()
    code = supervisor.run()
    controller.join(20)
    say(f"run returned {code}")
    say(f"generations {len(generations)}")
    for pid, grandchild in generations:
        say(f"gone {pid} {not alive(pid)} {not alive(grandchild)}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
