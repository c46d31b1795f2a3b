"""Which TCP ports a running generation listens on, to explain a failed handoff.

During a handoff two generations run at once. A program that binds its own
port (rather than taking envwrap's ``--listen`` socket on descriptor 3) fails
beside the running one with "address already in use" -- not because of the new
secrets. envwrap cannot see why a program exited, but it can see that the
running generation holds a port, and say so (docs/rotation.md).

Linux only (``/proc``); elsewhere no port is found and nothing is said.
"""

from __future__ import annotations

import os

__all__ = ["address_conflict", "listening_ports"]

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp (include/net/tcp_states.h)


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def listening_ports(pid: int) -> list[int]:
    """The TCP ports (IPv4 and IPv6) that sockets of process ``pid`` listen on."""
    inodes = _socket_inodes(pid)
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(fields) > 9 and fields[3] == _LISTEN and fields[9] in inodes:
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return sorted(ports)


def address_conflict(running: int) -> str | None:
    """Why a new generation may have exited beside generation ``running``, or None."""
    ports = listening_ports(running)
    if not ports:
        return None
    listed = ", ".join(str(port) for port in ports)
    return (f"the running generation (pid {running}) listens on port {listed}: a program "
            "that binds its own port fails beside it with 'address already in use'; let "
            f"envwrap hold the port with --listen :{ports[0]} and take it on descriptor 3 "
            "(docs/rotation.md)")
