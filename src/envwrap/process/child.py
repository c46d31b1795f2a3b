"""One generation of the supervised program: start it, signal it, kill its tree.

A :class:`Child` knows processes, never secrets: its environment is an opaque
mapping it hands to :func:`envwrap.process.posix.spawn`. It does not wait for itself
either -- the supervisor's reaper owns ``waitpid`` and reports the exit status
back through :meth:`Child.exited` (a second ``waitpid`` caller would steal it).
"""

from __future__ import annotations

import os

from envwrap import log
from envwrap.process import posix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import psutil

    from envwrap.process.checks import OutputTap

__all__ = ["Child"]


class Child:
    """A started program in its own process group (pgid == pid)."""

    __slots__ = ("pid", "status", "stopped")

    def __init__(self, pid: int) -> None:
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
        passed: Sequence[int] = (),
        cwd: str | None = None,
        tap: OutputTap | None = None,
    ) -> Child:
        """Spawn ``argv`` in the folder ``cwd``; raises :class:`OSError` (with the
        exec errno) if it cannot run. ``passed`` descriptors (``--listen``) land
        on its fds 3, 4, ...; a ``tap`` (``--ready log:``) gives it its stdio
        instead of ``stdio``.
        """
        if cwd is not None and not os.path.isdir(cwd):
            # a restart after the start folder was removed: "/" beats not starting
            log.warning("the folder envwrap was started in is gone; starting the program in /",
                        folder=cwd)
            cwd = "/"
        try:
            pid = posix.spawn(argv, environment, slate, terminal=terminal, passed=passed,
                              cwd=cwd, stdio=stdio if tap is None else tap.stdio)
        except BaseException:
            if tap is not None:
                tap.abandon()
            raise
        if tap is not None:
            tap.started(pid)
        return cls(pid)

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

        The group rather than the PID, as dumb-init does: a shell
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

    def group_alive(self) -> bool:
        """Whether any process is left in the child's process group (zombies count)."""
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover -- a setuid member: it exists
            return True
        return True

    def kill_tree(self, spare: Sequence[Child] = ()) -> int:
        """SIGKILL the child's process group and its descendants.

        Called when the child outlived ``--kill-timeout``. With nothing to
        ``spare`` (one generation running), that is every descendant of
        envwrap: as PID 1 or a subreaper, envwrap adopts the orphans the child
        left behind, and in supervise mode envwrap has no other children, so
        this catches processes that left the group (``setsid``, a shell's
        background jobs) or lost their parent. While other generations run
        (a handoff), the victims are only this child, its descendants and the
        adopted orphans still in its process group (or in its session, when the
        program made itself a session leader); every process of a spared
        generation (group, session, descendants) is left alone, and an orphan
        that left both cannot be attributed, so it is left for the final stop.
        Returns how many processes were sent SIGKILL. :mod:`psutil` is imported
        only here (50 ms); without it only the group is killed.
        """
        victims: list[psutil.Process] = []
        try:
            import psutil

            victims = psutil.Process().children(recursive=True)
            if spare:
                victims = self._own(victims, spare)
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

    def _own(self, everyone: list[psutil.Process], spare: Sequence[Child]) -> list[psutil.Process]:
        """The processes of ``everyone`` (envwrap's descendants) that belong to this child."""
        import psutil

        def tree(pid: int) -> set[int]:
            try:
                return {pid} | {p.pid for p in psutil.Process(pid).children(recursive=True)}
            except psutil.Error:
                return {pid}

        spared: set[int] = set()
        for other in spare:
            spared |= tree(other.pid)
        leaders = {other.pid for other in spare}
        mine = tree(self.pid)
        own = []
        for process in everyone:
            if process.pid in spared:
                continue
            try:
                # a generation's process group, or its session if it called setsid
                marks = {os.getpgid(process.pid), os.getsid(process.pid)}
            except OSError:
                continue
            if marks & leaders:
                continue
            if process.pid in mine or self.pid in marks:
                own.append(process)
        return own
