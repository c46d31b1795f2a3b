"""One generation of the supervised program: start it, signal it, kill its tree.

A :class:`Child` knows processes, never secrets: its environment is an opaque
mapping it hands to :func:`envwrap.posix.spawn`. It does not wait for itself
either -- the supervisor's reaper owns ``waitpid`` and reports the exit status
back through :meth:`Child.exited` (a second ``waitpid`` caller would steal it).
"""

from __future__ import annotations

import os

from envwrap import log, posix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import psutil

__all__ = ["Child"]


class Child:
    """A started program in its own process group (pgid == pid)."""

    __slots__ = ("argv", "pid", "status", "stopped")

    def __init__(self, argv: Sequence[str], pid: int) -> None:
        self.argv = list(argv)
        self.pid = pid
        #: the raw wait status, once the reaper has collected it
        self.status: int | None = None
        #: stopped by a signal (job control), as last reported by the reaper
        self.stopped = False

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        environment: Mapping[str, str],
        slate: posix.CleanSlate,
        *,
        stdio: tuple[int | None, int | None, int | None] = (None, None, None),
        terminal: int | None = None,
        cwd: str | None = None,
    ) -> Child:
        """Spawn ``argv`` in the folder ``cwd``; raises :class:`OSError` (with the
        exec errno) if it cannot run."""
        if cwd is not None and not os.path.isdir(cwd):
            # a restart after the start folder was removed: "/" beats not starting
            log.warning("the folder envwrap was started in is gone; starting the program in /",
                        folder=cwd)
            cwd = "/"
        pid = posix.spawn(argv, environment, slate, stdio=stdio, terminal=terminal, cwd=cwd)
        return cls(argv, pid)

    @property
    def alive(self) -> bool:
        """Not reaped yet (a zombie still counts: its group may have members)."""
        return self.status is None

    @property
    def exit_code(self) -> int:
        """The exit code, 128+N for death by signal N; only once reaped."""
        assert self.status is not None, "the child has not been reaped"
        return posix.exit_code_of(self.status)

    def exited(self, status: int) -> None:
        self.status = status
        self.stopped = False

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the child's process group; False when nobody is left.

        The group rather than the PID, as DESIGN §3 and dumb-init do: a shell
        wrapper (``sh -c 'a | b'``) would not pass a signal on to its pipeline.
        """
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            # the group is empty; the leader may still be an unreaped zombie
            return False
        except PermissionError:  # pragma: no cover -- a setuid child
            try:
                os.kill(self.pid, signum)
            except OSError:
                return False
        return True

    def kill_tree(self) -> int:
        """SIGKILL the child's process group and every descendant of envwrap.

        Called when the child outlived ``--kill-timeout``. "Descendants of
        envwrap" rather than "of the child": as PID 1 or a subreaper, envwrap
        adopts the orphans the child left behind, and in supervise mode envwrap
        has no other children, so this catches processes that left the group
        (``setsid``, a shell's background jobs) or lost their parent. Returns
        how many descendants were sent SIGKILL. :mod:`psutil` is imported only
        here (50 ms); without it only the group is killed.
        """
        victims: list[psutil.Process] = []
        try:
            import psutil

            victims = psutil.Process().children(recursive=True)
        except Exception:  # pragma: no cover -- no psutil, or /proc unreadable: the group
            victims = []
        # the group first, so that its members cannot fork new ones meanwhile
        self.signal(posix.SIGKILL)
        killed = 0
        for victim in victims:
            try:
                # psutil checks that the PID still names the same process
                # (creation time), so a recycled PID is never hit
                victim.send_signal(posix.SIGKILL)
                killed += 1
            except Exception:  # noqa: S112 -- gone already (NoSuchProcess) or not ours
                continue
        return killed
