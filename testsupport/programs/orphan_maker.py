"""Make an orphan, let it end, and report whether anybody reaped it.

    orphan_maker.py [--subreaper] [--exit N]

A middle process forks the orphan-to-be and exits at once, so the orphan is
re-parented (to PID 1, or to the nearest child subreaper). Then the orphan is
told to exit, and its /proc entry is watched: ``reaped`` once it is gone,
``zombie`` if it is still a zombie after 2 s. With ``--subreaper`` this process
makes itself a subreaper that never reaps -- the negative control.
Prints ``orphan PID parent=PPID`` then the verdict; exits N (default 0).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time


def state(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except FileNotFoundError:
        return None
    return fields["State"].split()[0], int(fields["PPid"])


def main(argv: list[str]) -> int:
    if "--subreaper" in argv:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    code = int(argv[argv.index("--exit") + 1]) if "--exit" in argv else 0
    hold_r, hold_w = os.pipe()  # the orphan exits when this reaches EOF
    pid_r, pid_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        orphan = os.fork()
        if orphan == 0:
            os.close(hold_w)
            os.read(hold_r, 1)
            os._exit(0)
        os.write(pid_w, str(orphan).encode())
        os._exit(0)
    os.close(pid_w)
    orphan = int(os.read(pid_r, 32))
    os.waitpid(middle, 0)  # only the middle one: this process reaps nothing else
    deadline = time.monotonic() + 5
    while (found := state(orphan)) is not None and found[1] == middle:
        if time.monotonic() > deadline:
            raise SystemExit("the orphan was never re-parented")
        time.sleep(0.01)
    print(f"orphan {orphan} parent={found[1] if found else '?'}", flush=True)
    os.close(hold_w)
    deadline = time.monotonic() + 2
    while (found := state(orphan)) is not None:
        if time.monotonic() > deadline:
            print("zombie" if found[0] == "Z" else f"state {found[0]}", flush=True)
            return code
        time.sleep(0.01)
    print("reaped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
