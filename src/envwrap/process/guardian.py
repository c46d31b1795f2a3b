"""Leave nothing behind when envwrap itself is SIGKILLed (supervise mode, Linux).

``PR_SET_PDEATHSIG`` reaches the program only, not what the program started;
a grandchild in its group, or one that escaped with ``setsid``, would outlive
a SIGKILLed envwrap, re-parented to PID 1. So, where cgroup v2 lets envwrap
create a group below its own:

- envwrap makes a sub-group (``envwrap-PID``) and forks a guardian that stays
  outside it, in a session of its own, with no descriptor but the read end of
  a pipe whose write end only envwrap holds.
- The guardian moves envwrap into the group, then every descendant of envwrap
  that is not in it yet (the program may have started already), until a sweep
  finds none; from then on every process envwrap or the program starts is
  born in the group, whatever it does with process groups and sessions. The
  move is the guardian's job, not envwrap's, because the first move into a
  new group waits for an RCU grace period (about 10 ms on a busy machine),
  which would double ``envwrap --init``'s start-up time; the price is a window
  of a few milliseconds after start where a SIGKILL would still leave
  grandchildren behind.
- The pipe's EOF is envwrap's death, however it died. Then the guardian writes
  ``1`` to ``cgroup.kill`` (Linux 5.14) -- every process left in the group is
  SIGKILLed by the kernel, atomically, forks included -- and removes the
  group.
- On a normal exit envwrap first tells the guardian so (one byte): the
  supervisor has already stopped the program, and whatever it chose to leave
  running is moved back to the parent group rather than killed.

Where no group can be made (cgroup v1 only, a read-only cgroup file system,
no delegation), the guardian falls back to following envwrap's descendants:
every :data:`WATCH_EVERY` seconds it notes their PIDs (with their start times,
so that a recycled PID is never hit); at envwrap's death it SIGKILLs those
still alive and the process groups they lead. What was started after its last
look and left its group is missed: the fallback is best effort.

The guardian can be neither read nor traced by the program, though they
share a uid (docs/SECURITY.md): envwrap makes itself non-dumpable before
forking it (:func:`envwrap.process.prctl.make_undumpable`), a flag the fork
keeps, and the first thing the guardian does is overwrite, in its copy of
envwrap's memory, the environment block and every copy of the credentials it
is given (:mod:`envwrap.process.forget`): it needs none of them.

The guardian is forked twice (its parent exits at once), so it is not
envwrap's child: the supervisor's reaper, which waits for every child before
a restart, never sees it. As PID 1 nothing is needed: the kernel kills the
whole PID namespace with it.
"""

from __future__ import annotations

import os

from envwrap.process.forget import forget
from envwrap.process.posix import descriptor_ceiling

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the stubs of the C module below
    from collections.abc import Iterable
    from typing import NoReturn
else:
    import _signal  # not `signal`, which imports enum

__all__ = ["Guardian", "own_cgroup", "start"]

#: the byte that says "a normal exit: do not kill what is left"
_RELEASE = b"r"
#: how long the guardian tries to remove the emptied group
_REMOVE_TRIES = 50
#: without a cgroup: how often the guardian notes envwrap's descendants (seconds)
WATCH_EVERY = 1.0


class Guardian:
    """envwrap's end of the guardian: the pipe, and the group it watches."""

    __slots__ = ("group", "write_fd")

    def __init__(self, write_fd: int, group: str | None) -> None:
        self.write_fd = write_fd
        self.group = group

    def release(self) -> None:
        """A normal exit: the guardian keeps what is left alive (moved out of the group)."""
        try:  # noqa: SIM105 -- contextlib would cost start-up time
            os.write(self.write_fd, _RELEASE)
        except OSError:
            pass  # the guardian is gone: nothing to tell


def own_cgroup() -> str | None:
    """The folder of envwrap's own cgroup v2 group, or None (no cgroup v2 mounted)."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as handle:
            lines = handle.read().splitlines()
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            mounts = handle.read().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None or path.endswith("(deleted)"):
        return None
    for mount in mounts:
        # "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER"
        before, _, after = mount.partition(" - ")
        if after.split(" ", 1)[0] != "cgroup2":
            continue
        fields = before.split()
        root, mountpoint = fields[3], fields[4]
        if path == root or path.startswith(root.rstrip("/") + "/"):
            relative = path[len(root.rstrip("/")):].lstrip("/")
            return os.path.join(mountpoint, relative)
    return None


def start(forgotten: Iterable[bytes] = ()) -> Guardian | None:
    """Make the group (where possible) and start the guardian; None as PID 1.

    Call on the main thread, before any other thread starts, before any
    secret is read (the guardian is a copy of envwrap's memory at this
    moment, kept for envwrap's whole life), and once envwrap is non-dumpable
    (the guardian inherits the flag). ``forgotten`` are the values the guardian
    erases from its copy (envwrap's credentials) before anything else.
    """
    # a list: the guardian must not consume an iterator the caller reads again
    values = list(forgotten)
    if os.getpid() == 1:
        return None
    parent = own_cgroup()
    group: str | None = None
    if parent is not None:
        try:
            os.mkdir(os.path.join(parent, f"envwrap-{os.getpid()}"), 0o755)
            group = os.path.join(parent, f"envwrap-{os.getpid()}")
        except OSError:
            pass  # not ours to write: the fallback
    envwrap = os.getpid()
    read_fd, write_fd = os.pipe()  # O_CLOEXEC: the program inherits neither end
    try:
        middle = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        if group is not None:
            _remove(group)
        return None
    if middle == 0:  # pragma: no cover -- the intermediate process
        try:
            os.setsid()  # out of envwrap's session: no terminal signals reach it
            if os.fork() == 0:
                _guard(read_fd, group, parent, envwrap, values)
        finally:
            os._exit(0)
    os.close(read_fd)
    try:  # noqa: SIM105 -- contextlib would cost start-up time
        os.waitpid(middle, 0)
    except ChildProcessError:
        pass  # started with SIGCHLD ignored: the kernel reaped it already
    return Guardian(write_fd, group)


def _guard(
    read_fd: int, group: str | None, parent: str | None, envwrap: int, forgotten: list[bytes]
) -> NoReturn:  # pragma: no cover -- forked
    """The guardian: wait for envwrap's end, then empty and remove the group."""
    try:
        import select  # what it imports later, imported before its memory is rewritten
        import time

        del select, time
        forget(forgotten)
        forgotten.clear()
        for signum in _signal.valid_signals():
            try:  # deaf to everything a terminal or a group signal could send
                _signal.signal(signum, _signal.SIG_IGN)
            except (OSError, ValueError, RuntimeError):
                continue
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, read_fd)
        os.closerange(read_fd + 1, descriptor_ceiling())
        os.chdir("/")
        if group is None or parent is None:
            said, known = _follow(read_fd, envwrap)
            if _RELEASE not in said:
                _kill_known(known)
        else:
            _guard_group(read_fd, group, parent, envwrap)
    finally:
        os._exit(0)


def _guard_group(read_fd: int, group: str, parent: str, envwrap: int) -> None:
    _adopt(group, envwrap)
    said = b""
    while chunk := os.read(read_fd, 16):
        said += chunk
    if _RELEASE in said:
        _move_out(group, parent)
    else:
        _write(os.path.join(group, "cgroup.kill"), "1")
    _remove(group)


def _follow(read_fd: int, envwrap: int) -> tuple[bytes, dict[int, int]]:
    """No group: note envwrap's descendants until the pipe's EOF; what was said, and them."""
    import select

    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    known: dict[int, int] = {}  # pid -> start time
    said = b""
    while True:
        for pid in _descendants(envwrap):
            if pid not in known:
                started = _start_time(pid)
                if started is not None:
                    known[pid] = started
        for pid in [pid for pid, started in known.items() if _start_time(pid) != started]:
            del known[pid]  # gone (or its PID reused): forget it
        if poller.poll(int(WATCH_EVERY * 1000)):
            chunk = os.read(read_fd, 16)
            if not chunk:
                return said, known
            said += chunk


def _kill_known(known: dict[int, int]) -> None:
    """SIGKILL the noted processes that still run, and the process groups they lead."""
    for pid, started in known.items():
        if _start_time(pid) != started:
            continue  # gone, or the PID is someone else's now
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, _signal.SIGKILL)  # members forked since the last look
        except OSError:
            pass
        try:  # noqa: SIM105
            os.kill(pid, _signal.SIGKILL)
        except OSError:
            pass


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started (clock ticks after boot)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _adopt(group: str, envwrap: int) -> None:
    """Move envwrap, then its descendants not in the group yet, until none is left out."""
    procs = os.path.join(group, "cgroup.procs")
    if not _write(procs, str(envwrap)):
        return  # not allowed after all: the group stays empty, and is removed at the end
    for _ in range(100):  # a fork bomb must not keep the guardian busy forever
        moved = 0
        for pid in _descendants(envwrap):
            if not _in_group(pid, group) and _write(procs, str(pid)):
                moved += 1
        if not moved:
            return


def _descendants(root: int) -> list[int]:
    found: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                    children = [int(child) for child in handle.read().split()]
            except (OSError, ValueError):
                continue
            found += children
            pending += children
    return found


def _in_group(pid: int, group: str) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return True  # gone: nothing to move
    name = "/" + os.path.basename(group)
    return any(line.startswith("0::") and line.endswith(name) for line in lines)


def _move_out(group: str, parent: str) -> None:
    try:
        with open(os.path.join(group, "cgroup.procs"), encoding="ascii") as procs:
            pids = procs.read().split()
    except OSError:
        return
    for pid in pids:
        _write(os.path.join(parent, "cgroup.procs"), pid)


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(text)
    except OSError:
        return False
    return True


def _remove(group: str) -> None:
    """rmdir the group once its last process is gone (killed ones take a moment)."""
    import time

    for _ in range(_REMOVE_TRIES):
        try:
            os.rmdir(group)
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY: processes (or zombies) still in it
            time.sleep(0.02)
