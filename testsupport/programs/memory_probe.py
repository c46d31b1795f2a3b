"""A test program: looks for a value in every other process of its own uid.

    PROBE_NEEDLE_FILE=PATH memory_probe.py

The value (8 bytes or more) is read from the file ``$PROBE_NEEDLE_FILE``, not from
the probe's environment: envwrap scrubbed it from there. For each other process
whose real uid is the probe's, it reads ``/proc/PID/environ`` and every readable
mapping through ``/proc/PID/mem``, and prints
``PID environ=found|clean|denied mem=found|clean|denied``; then ``done N``
(N processes looked at).
"""

from __future__ import annotations

import os
import sys


def _read_environ(pid: int, needle: bytes) -> str:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            data = handle.read()
    except OSError:
        return "denied"
    return "found" if needle in data else "clean"


def _read_mem(pid: int, needle: bytes) -> str:
    try:
        with open(f"/proc/{pid}/maps", encoding="ascii") as maps:
            regions = maps.read().splitlines()
        mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError:
        return "denied"
    read_any = False
    try:
        for region in regions:
            fields = region.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                data = os.pread(mem, end - start, start)
            except OSError:
                continue
            read_any = True
            if needle in data:
                return "found"
    finally:
        os.close(mem)
    return "clean" if read_any else "denied"


def main() -> int:
    with open(os.environ["PROBE_NEEDLE_FILE"], "rb") as handle:
        needle = handle.read().strip()
    assert len(needle) >= 8
    me = os.getpid()
    uid = os.getuid()
    looked = 0
    for name in sorted(os.listdir("/proc")):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        if _real_uid(pid) != uid:  # (a non-dumpable process's /proc files are root's)
            continue
        looked += 1
        print(f"{pid} environ={_read_environ(pid, needle)} mem={_read_mem(pid, needle)}",
              flush=True)
    print(f"done {looked}", flush=True)
    return 0


def _real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


if __name__ == "__main__":
    sys.exit(main())
