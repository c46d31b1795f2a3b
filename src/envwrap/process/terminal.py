"""Job control and the terminal, as dumb-init does them.

In a terminal, the program owns it (its group is the foreground group), so
Ctrl-C and Ctrl-Z reach it directly; when it is stopped, envwrap takes the
terminal back and stops itself, so the shell that started envwrap regains
control; ``fg`` resumes envwrap, which hands the terminal back and resumes the
program (tini leaves the shell hanging instead). SIGTSTP, SIGTTIN or SIGTTOU
sent to envwrap is forwarded to the program's group, then envwrap stops itself
(SIGSTOP), so that whoever sent it sees the whole job stopped. Without a
controlling terminal the group gets SIGSTOP instead, as dumb-init does: a
program that catches SIGTSTP (to restore a terminal it does not have here)
would otherwise keep running while envwrap and the sender think it stopped. As PID 1
envwrap cannot stop (the kernel ignores SIGSTOP to a namespace's init from
inside it), so it only forwards, and resumes a program that stopped.
"""

from __future__ import annotations

import os

from envwrap import log
from envwrap.process import posix
from envwrap.values import signal_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal

    from envwrap.process.child import Child
else:
    import _signal

__all__ = ["Terminal"]


class Terminal:
    """envwrap's controlling terminal (if any) and whether envwrap stopped itself."""

    __slots__ = ("fd", "job_stopped")

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        #: envwrap stopped itself with the program, and was not continued since
        self.job_stopped = False

    def for_new_generation(self) -> int | None:
        """The terminal a new generation may take: none for a background job."""
        fd = self.fd
        if fd is not None and posix.terminal_owner(fd) != os.getpgrp():
            return None  # a background job (``envwrap --init -- cmd &``) does not take it
        return fd

    def follow(self, old: Child, new: Child) -> None:
        """A handoff: the terminal goes to the new generation if the old one had it."""
        fd = self.fd
        if fd is not None and posix.terminal_owner(fd) in (old.pid, os.getpgrp()):
            posix.take_terminal(fd, new.pid)

    def reclaim(self, child: Child) -> None:
        """Take the terminal back from ``child`` (it ended, or the shell wants it)."""
        fd = self.fd
        if fd is not None and posix.terminal_owner(fd) == child.pid:
            posix.take_terminal(fd, os.getpgrp())

    def continued(self, child: Child | None) -> None:
        """SIGCONT: if envwrap is now in the foreground, the program gets the terminal."""
        self.job_stopped = False
        fd = self.fd
        if fd is None or child is None or not child.alive:
            return
        if posix.terminal_owner(fd) == os.getpgrp():
            posix.take_terminal(fd, child.pid)

    def job_signal(self, signum: int) -> int:
        """What a job-control signal sent to envwrap becomes for the program's group.

        With a terminal, itself (the program may tidy the terminal up, then
        stop); without one, SIGSTOP, which no program can catch: the job stops.
        """
        return signum if self.fd is not None else _signal.SIGSTOP

    def stop_self(self, signum: int, child: Child | None) -> None:
        """After forwarding a job-control signal: stop envwrap too, as dumb-init does.

        Whoever sent it (a shell's job control, ``kill -TSTP``) then sees the
        whole job stopped, and resumes it with SIGCONT, which the loop forwards.
        """
        if os.getpid() == 1:
            return  # SIGSTOP to PID 1 from its own namespace is ignored anyway
        log.debug("stopping envwrap with the program", signal=signal_name(signum))
        self.job_stopped = True
        if child is not None:
            self.reclaim(child)  # the shell will want it back
        os.kill(os.getpid(), _signal.SIGSTOP)

    def child_stopped(self, child: Child) -> None:
        """The program was stopped (Ctrl-Z, SIGTTIN, SIGSTOP)."""
        fd = self.fd
        if fd is None:
            return  # no terminal, no shell to hand control to (tini does the same)
        if posix.terminal_owner(fd) == child.pid:
            posix.take_terminal(fd, os.getpgrp())
        if self.job_stopped:
            return  # envwrap stopped itself with it already (a forwarded SIGTSTP)
        if os.getpid() == 1:
            # Nobody can resume PID 1 (the kernel ignores SIGSTOP sent to it by its
            # own namespace), so resume the program instead of leaving it hanging.
            self.continued(child)
            child.signal(_signal.SIGCONT)
            return
        log.debug("the program was stopped; stopping envwrap too", pid=child.pid)
        # Stop envwrap so that the shell sees its job stopped and takes the
        # terminal; the shell's `fg` or `bg` sends SIGCONT, handled in the loop.
        os.kill(os.getpid(), _signal.SIGSTOP)
