"""Supervise mode's main-thread loop: signals, reaping, and requests from threads.

envwrap stays the parent of the program (``--init``, ``--watch``, ``--mask``)
and does, at least, what tini and dumb-init do (DESIGN §3):

- The program runs in its own process group. Every catchable signal envwrap
  receives is forwarded to that group exactly once, in arrival order, as that
  same signal (SIGINT stays SIGINT, SIGHUP and SIGQUIT are only forwarded, as
  tini and dumb-init do) -- except SIGCHLD (envwrap's own), SIGPIPE and
  SIGXFSZ (see :data:`posix.ENVWRAP_IGNORES`), the synchronous faults, and
  signals that envwrap was started with ignored (they stay ignored, for the
  program too).
- SIGTERM or SIGINT to envwrap also means "stop": SIGINT is forwarded as
  SIGINT, SIGTERM as ``--kill-signal`` (SIGTERM unless changed); if the
  program or anything it started is still running after ``--kill-timeout``,
  every descendant is sent SIGKILL; envwrap then exits with the program's code
  (128+N for death by signal N).
- Job control: SIGTSTP, SIGTTIN or SIGTTOU sent to envwrap is forwarded to the
  program's group, then envwrap stops itself (SIGSTOP), so that whoever sent
  it sees the whole job stopped; SIGCONT resumes envwrap, which forwards it
  (dumb-init's behaviour). As PID 1 envwrap cannot stop (the kernel ignores
  SIGSTOP to a namespace's init from inside it), so it only forwards.
- envwrap is PID 1 or a child subreaper, and reaps every process that ends up
  its child. This loop is the only caller of ``waitpid``; the program is
  recognised by its PID, so its status is never lost to the reaper.
- In a terminal, the program owns it (its group is the foreground group), so
  Ctrl-C and Ctrl-Z reach it directly; when it is stopped, envwrap takes the
  terminal back and stops itself, so the shell that started envwrap regains
  control; ``fg`` resumes envwrap, which hands the terminal back and resumes
  the program (dumb-init's behaviour; tini leaves the shell hanging).

Signal handling design, tini's: every signal envwrap catches is *blocked* in
the main thread, before any thread exists (threads inherit the mask, so the
kernel can deliver them to no thread), and the loop takes them one at a time
with ``sigwaitinfo`` -- or ``sigtimedwait`` while a stop has a deadline. Each
is handled once, in the order the kernel queues them (arrival order; lowest
number first among signals pending at the same moment -- signal(7)).
Handlers would not do: when several signals are pending, Linux stacks their
handler frames, so they would run in reverse order. Requests from other
threads (:meth:`Supervisor.replace`, :meth:`~Supervisor.send`,
:meth:`~Supervisor.request_exit`) are queued under a lock and wake the loop
with a SIGCHLD sent to the main thread (``pthread_kill``), which the loop
takes as "reap, then look at the queue". Idle, the loop sleeps in one
``sigwaitinfo``: no polling, no CPU. Where ``sigwaitinfo`` does not exist
(macOS), Python handlers write to a wakeup pipe instead, and the loop polls it.

The signals stay blocked once :meth:`Supervisor.run` returns: envwrap is
about to exit, and a late SIGTERM must not replace the program's exit code.
"""

from __future__ import annotations

import _thread
import os
import time

from envwrap import log, posix
from envwrap.child import Child
from envwrap.launch import command_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable, Mapping, Sequence
    from types import FrameType

    Done = Callable[[object], None]
else:
    import _signal

__all__ = ["JOB_CONTROL", "KILL_GRACE", "STOP_SIGNALS", "Supervisor"]

#: the signals that tell envwrap itself to stop
STOP_SIGNALS = frozenset((_signal.SIGTERM, _signal.SIGINT))
#: forwarded, then envwrap stops itself (dumb-init's job control)
JOB_CONTROL = posix.JOB_CONTROL
#: after SIGKILL, how long to wait for the killed processes to be reaped before
#: giving up on them (a process in uninterruptible sleep cannot die at once)
KILL_GRACE = 5.0

# why a stop is in progress; a "stop" or "exit" supersedes a "replace"
_REPLACE, _EXIT, _STOP = "replace", "exit", "stop"


class _SignalWait:
    """Signals blocked, taken one at a time with sigwaitinfo(2) (Linux, BSDs)."""

    def __init__(self, signals: frozenset[int]) -> None:
        self.signals = signals
        self.main = _thread.get_ident()
        _signal.pthread_sigmask(_signal.SIG_BLOCK, signals)

    def wait(self, timeout: float | None) -> list[int]:
        """Block until a signal (or ``timeout`` seconds); CPython retries on EINTR."""
        if timeout is None:
            return [_signal.sigwaitinfo(self.signals).si_signo]
        info = _signal.sigtimedwait(self.signals, timeout)
        return [] if info is None else [info.si_signo]

    def wake(self) -> None:
        """From any thread: SIGCHLD, pending on the main thread, ends its wait."""
        _signal.pthread_kill(self.main, _signal.SIGCHLD)

    def close(self) -> None:
        """Nothing: the signals stay blocked (see the module's docstring)."""


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler of :class:`_WakeupPipe`: the pipe does the work."""


class _WakeupPipe:
    """Where there is no sigwaitinfo (macOS): handlers and :func:`signal.set_wakeup_fd`.

    CPython's C handler writes the signal number to the pipe, a zero byte is a
    wake-up from another thread. Order among signals pending at once is not
    kept (the handler frames stack), and a signal that arrives while the loop is
    busy is still taken.
    """

    def __init__(self, signals: frozenset[int]) -> None:
        # Only blocked signals are safe from envwrap's own terminal I/O (see
        # posix.TERMINAL_IO); here nothing is blocked, so those two stay ignored.
        for signum in signals & posix.TERMINAL_IO:
            _signal.signal(signum, _signal.SIG_IGN)
        signals = signals - posix.TERMINAL_IO
        self.read_fd, self.write_fd = os.pipe()  # O_CLOEXEC (PEP 446)
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)  # set_wakeup_fd requires it
        for signum in signals:
            _signal.signal(signum, _ignore_signal)
        _signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)

    def wait(self, timeout: float | None) -> list[int]:
        import select

        poller = select.poll()  # not select(): it fails on fds over 1023
        poller.register(self.read_fd, select.POLLIN)
        if not poller.poll(None if timeout is None else int(timeout * 1000) + 1):
            return []
        data = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return [byte for byte in data if byte]

    def wake(self) -> None:
        try:  # noqa: SIM105 -- contextlib would cost start-up time
            os.write(self.write_fd, b"\0")
        except BlockingIOError:
            pass  # full of unread wake-ups already

    def close(self) -> None:
        _signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self.write_fd)


def _signal_source(signals: frozenset[int]) -> _SignalWait | _WakeupPipe:
    """sigwaitinfo where it exists; the wakeup pipe elsewhere (tests force it here)."""
    if hasattr(_signal, "sigtimedwait"):
        return _SignalWait(signals)
    return _WakeupPipe(signals)


class Supervisor:
    """Run ``argv`` as envwrap's child until it ends; one generation at a time.

    Construct on the main thread, before starting any other thread (signals
    are blocked here, and only threads started afterwards inherit the block),
    then :meth:`run` on the main thread. :meth:`replace`,
    :meth:`send` and :meth:`request_exit` may be called from any thread, at any
    time (before :meth:`run` too); they return at once, and the optional
    ``done`` callback is called later, on the main thread, with the outcome.
    It must be quick and must not call back into the supervisor synchronously.
    """

    def __init__(
        self,
        argv: Sequence[str],
        environment: Mapping[str, str],
        *,
        kill_signal: int = _signal.SIGTERM,
        kill_timeout: float = 10.0,
        stdio: tuple[int | None, int | None, int | None] = (None, None, None),
        use_terminal: bool = True,
        clock: Callable[[], float] = time.monotonic,
        cwd: str | None = None,
    ) -> None:
        self.argv = list(argv)
        #: where the program starts (envwrap's own folder is "/" by then)
        self.cwd = cwd
        self.kill_signal = kill_signal
        self.kill_timeout = kill_timeout
        #: the program's fds 0, 1, 2 where not envwrap's own (``--mask`` pipes)
        self.stdio = stdio
        self._environment = dict(environment)
        self._use_terminal = use_terminal
        self._clock = clock
        self._lock = _thread.allocate_lock()
        self._commands: list[tuple[str, object, Done | None]] = []
        self._closed = False
        self._intercepts: dict[int, Callable[[int], None]] = {}
        # what the program must start with, before anything below changes it
        self._slate = posix.CleanSlate()
        for signum in posix.ENVWRAP_IGNORES:
            _signal.signal(signum, _signal.SIG_IGN)
        caught = posix.FORWARDABLE - self._slate.ignored_at_start
        if _signal.SIGCHLD in self._slate.ignored_at_start:
            # SIGCHLD ignored makes the kernel reap children itself, exit
            # statuses lost (waitpid(2), NOTES); the program still gets it ignored
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            caught |= {_signal.SIGCHLD}
        if getattr(_thread, "_count", lambda: 0)():
            log.debug("threads started before the supervisor may take signals meant for it")
        self._signals = _signal_source(caught)
        self._child: Child | None = None
        #: envwrap stopped itself after forwarding a job-control signal, and
        #: has not been continued since
        self._job_stopped = False
        self._terminal: int | None = None
        self._adopts_orphans = False
        self._children_left = True
        self._result: int | None = None
        # the stop in progress
        self._stopping: str | None = None
        self._deadline: float | None = None
        self._escalated = False
        self._abandoned = False
        self._stop_signal = kill_signal
        self._exit_code: int | None = None
        self._next_environment: dict[str, str] | None = None
        self._replace_done: list[Done] = []

    # --- requests, from any thread ---------------------------------------------------

    def replace(self, environment: Mapping[str, str], done: Done | None = None) -> None:
        """Stop the running generation, wait until its whole tree is gone, start
        a new one with ``environment``. Requests that arrive while one is in
        progress are merged: the last environment wins. ``done`` gets the new
        PID, or None if envwrap stopped instead.
        """
        self._request(_REPLACE, dict(environment), done)

    def send(self, signum: int, done: Done | None = None) -> None:
        """Send ``signum`` to the program's process group; ``done`` gets whether
        there was a program to send it to."""
        self._request("send", signum, done)

    def request_exit(self, code: int, done: Done | None = None) -> None:
        """Stop the program (as on SIGTERM), then make :meth:`run` return ``code``."""
        self._request(_EXIT, code, done)

    def _request(self, kind: str, value: object, done: Done | None) -> None:
        with self._lock:
            if not self._closed:
                self._commands.append((kind, value, done))
                self._signals.wake()
                return
        if done is not None:
            done(None)

    # --- main thread -----------------------------------------------------------------

    def intercept(self, signum: int, callback: Callable[[int], None]) -> None:
        """Handle ``signum`` with ``callback`` (on the main thread) instead of
        forwarding it, e.g. a reload signal for envwrap itself. Call before run."""
        self._intercepts[signum] = callback

    @property
    def pid(self) -> int | None:
        """The running program's PID (None between generations)."""
        child = self._child
        return child.pid if child is not None and child.alive else None

    def run(self) -> int:
        """Start the program and supervise it; return envwrap's exit code.

        Raises :class:`~envwrap.errors.CommandError` (126/127) when the first
        generation cannot be executed. Must be called on the main thread.
        """
        self._become_reaper()
        if self._use_terminal:
            self._terminal = posix.controlling_terminal()
        try:
            try:
                self._spawn(self._environment)
            except OSError as exc:
                raise command_error(self.argv[0], exc) from None
            while self._result is None:
                self._step(self._signals.wait(self._timeout()))
            return self._result
        except BaseException:
            child = self._child
            if child is not None and child.alive and self._result is None:
                child.kill_tree()  # a bug in envwrap must not leave the program behind
            raise
        finally:
            self._uninstall()

    def _become_reaper(self) -> None:
        if os.getpid() == 1:
            self._adopts_orphans = True  # the kernel re-parents orphans to PID 1
            return
        self._adopts_orphans = posix.set_child_subreaper()
        if not self._adopts_orphans:
            log.debug("cannot become a child subreaper; orphans go to PID 1")

    def _uninstall(self) -> None:
        with self._lock:
            self._closed = True
            commands, self._commands = self._commands, []
            self._signals.close()
        for _kind, _value, done in commands:
            if done is not None:
                done(None)
        for done in self._replace_done:
            done(None)
        self._replace_done = []
        if self._terminal is not None and self._child is not None:
            self._reclaim_terminal(self._child)

    def _timeout(self) -> float | None:
        """Seconds until the stop deadline; None (block) when there is none."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock())

    def _step(self, signals: list[int]) -> None:
        for signum in signals:
            self._on_signal(signum)
        self._reap()
        self._on_commands()
        self._on_time()
        self._advance()

    # --- signals ---------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        if signum == _signal.SIGCHLD:
            return  # reaped in every step
        callback = self._intercepts.get(signum)
        if callback is not None:
            callback(signum)
            return
        if signum in STOP_SIGNALS and self._stopping in (None, _REPLACE):
            log.info("stopping the program", signal=posix.signal_name(signum))
            if signum != _signal.SIGTERM and self._stopping is not None:
                self._forward(signum)  # a replacement already sent the kill signal
            self._begin_stop(_STOP, signum=None if signum == _signal.SIGTERM else signum)
            return
        if signum == _signal.SIGCONT:
            self._job_stopped = False
            self._hand_terminal_back()
        self._forward(signum)
        if signum in JOB_CONTROL:
            self._stop_self(signum)

    def _stop_self(self, signum: int) -> None:
        """After forwarding a job-control signal: stop envwrap too, as dumb-init does.

        Whoever sent it (a shell's job control, ``kill -TSTP``) then sees the
        whole job stopped, and resumes it with SIGCONT, which the loop forwards.
        """
        if os.getpid() == 1:
            return  # SIGSTOP to PID 1 from its own namespace is ignored anyway
        log.debug("stopping envwrap with the program", signal=posix.signal_name(signum))
        self._job_stopped = True
        if self._child is not None:
            self._reclaim_terminal(self._child)  # the shell will want it back
        os.kill(os.getpid(), _signal.SIGSTOP)

    def _forward(self, signum: int) -> bool:
        child = self._child
        if child is None or not child.alive:
            log.debug("no program to forward a signal to", signal=posix.signal_name(signum))
            return False
        if log.enabled("debug"):
            log.debug("forwarding", signal=posix.signal_name(signum), pid=child.pid)
        return child.signal(signum)

    # --- children --------------------------------------------------------------------

    def _spawn(self, environment: dict[str, str]) -> None:
        assert self._slate is not None
        terminal = self._terminal
        if terminal is not None and posix.terminal_owner(terminal) != os.getpgrp():
            terminal = None  # a background job does not take the terminal
        self._child = Child.start(
            self.argv, environment, self._slate, stdio=self.stdio, terminal=terminal,
            cwd=self.cwd,
        )
        self._environment = environment
        log.info("started the program", program=self.argv[0], pid=self._child.pid)

    def _reap(self) -> None:
        changes, self._children_left = posix.reap(watch_stops=True)
        for pid, status in changes:
            child = self._child
            if child is None or pid != child.pid or not child.alive:
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    log.debug("reaped an orphan", pid=pid)
                continue
            if os.WIFSTOPPED(status):
                child.stopped = True
                self._on_child_stopped(child)
            elif os.WIFCONTINUED(status):
                child.stopped = False
            else:
                child.exited(status)
                self._on_child_exited(child)

    def _on_child_exited(self, child: Child) -> None:
        log.info("the program exited", pid=child.pid, code=child.exit_code)
        self._reclaim_terminal(child)
        if self._stopping is not None:
            return  # _advance waits for the rest of the tree
        # It ended on its own, which ends envwrap (DESIGN §3). What it left in
        # its process group gets the kill signal, as dumb-init does, but is not
        # waited for: the program's exit must not be delayed by its leftovers.
        child.signal(self.kill_signal)
        self._result = child.exit_code

    def _on_child_stopped(self, child: Child) -> None:
        """Job control: the program was stopped (Ctrl-Z, SIGTTIN, SIGSTOP)."""
        terminal = self._terminal
        if terminal is None:
            return  # no terminal, no shell to hand control to (tini does the same)
        if posix.terminal_owner(terminal) == child.pid:
            posix.take_terminal(terminal, os.getpgrp())
        if self._job_stopped:
            return  # envwrap stopped itself with it already (a forwarded SIGTSTP)
        if os.getpid() == 1:
            # Nobody can resume PID 1 (the kernel ignores SIGSTOP sent to it by its
            # own namespace), so resume the program instead of leaving it hanging.
            self._hand_terminal_back()
            child.signal(_signal.SIGCONT)
            return
        log.debug("the program was stopped; stopping envwrap too", pid=child.pid)
        # Stop envwrap so that the shell sees its job stopped and takes the
        # terminal; the shell's `fg` or `bg` sends SIGCONT, handled in the loop.
        os.kill(os.getpid(), _signal.SIGSTOP)

    def _hand_terminal_back(self) -> None:
        """On SIGCONT: if envwrap is now in the foreground, the program gets the terminal."""
        terminal, child = self._terminal, self._child
        if terminal is None or child is None or not child.alive:
            return
        if posix.terminal_owner(terminal) == os.getpgrp():
            posix.take_terminal(terminal, child.pid)

    def _reclaim_terminal(self, child: Child) -> None:
        terminal = self._terminal
        if terminal is not None and posix.terminal_owner(terminal) == child.pid:
            posix.take_terminal(terminal, os.getpgrp())

    # --- stopping ----------------------------------------------------------------------

    def _begin_stop(self, reason: str, signum: int | None = None) -> None:
        """Stop the program with ``signum`` (default ``--kill-signal``), then escalate."""
        if self._stopping is not None:
            if self._stopping == _REPLACE and reason != _REPLACE:
                self._stopping = reason  # the program is on its way out already
            return
        self._stopping = reason
        self._deadline = self._clock() + self.kill_timeout
        self._escalated = self._abandoned = False
        child = self._child
        sent = self._stop_signal = self.kill_signal if signum is None else signum
        if child is not None and child.alive:
            log.debug("asking the program to stop", pid=child.pid,
                      signal=posix.signal_name(sent))
            child.signal(sent)
            if child.stopped and sent != _signal.SIGCONT:
                child.signal(_signal.SIGCONT)  # a stopped process acts on nothing else

    def _on_time(self) -> None:
        if self._stopping is None or self._deadline is None:
            return
        now = self._clock()
        if now < self._deadline:
            return
        child = self._child
        if not self._escalated:
            killed = child.kill_tree() if child is not None else 0
            log.warning(
                f"the program did not stop within {self.kill_timeout:g}s of "
                f"{posix.signal_name(self._stop_signal)}; sent SIGKILL to its process tree",
                processes=killed,
            )
            self._escalated = True
            self._deadline = now + KILL_GRACE
        else:
            log.error("processes of the program survive SIGKILL; no longer waiting for them")
            self._abandoned = True

    def _advance(self) -> None:
        """Finish a stop once the program and every process it left are gone."""
        if self._stopping is None:
            return
        child = self._child
        if child is not None and child.alive and not self._abandoned:
            return
        if self._children_left and self._adopts_orphans and not self._abandoned:
            return  # orphans of this generation still run (envwrap adopted them)
        reason = self._stopping
        self._stopping = self._deadline = None
        self._escalated = self._abandoned = False
        if child is None:
            code = 0
        elif child.alive:
            code = 128 + _signal.SIGKILL
        else:
            code = child.exit_code
        if reason == _STOP:
            self._result = code
        elif reason == _EXIT:
            self._result = self._exit_code if self._exit_code is not None else code
        else:
            self._start_next()

    def _start_next(self) -> None:
        environment = self._next_environment or self._environment
        waiting, self._replace_done = self._replace_done, []
        self._next_environment = None
        try:
            self._spawn(environment)
        except OSError as exc:
            error = command_error(self.argv[0], exc)
            log.error(f"cannot restart the program: {error}")
            self._result = error.exit_code
            outcome: int | None = None
        else:
            assert self._child is not None
            outcome = self._child.pid
        for done in waiting:
            done(outcome)

    # --- requests ------------------------------------------------------------------------

    def _on_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for kind, value, done in commands:
            if kind == _REPLACE:
                assert isinstance(value, dict)
                if self._result is not None or self._stopping in (_STOP, _EXIT):
                    if done is not None:
                        done(None)
                    continue
                self._next_environment = value
                if done is not None:
                    self._replace_done.append(done)
                self._begin_stop(_REPLACE)
            elif kind == "send":
                assert isinstance(value, int)
                delivered = self._forward(value)
                if done is not None:
                    done(delivered)
            else:
                assert isinstance(value, int)
                if self._exit_code is None and self._stopping in (None, _REPLACE):
                    self._exit_code = value
                    self._begin_stop(_EXIT)
                if done is not None:
                    done(value)
