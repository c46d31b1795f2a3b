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

Generations (DESIGN §9). Each start of the program is a generation; the
*current* one gets forwarded signals and gives envwrap its exit code. With a
readiness check (``--ready``), a new generation is on *probation* until the
check passes, it exits, or ``--ready-timeout`` ends. :meth:`Supervisor.handoff`
starts a *candidate* next to the current generation and, once the candidate is
ready, *retires* the old one (``--kill-signal``, ``--kill-timeout``, then
SIGKILL of its own tree, never the new generation's); a candidate that fails
is retired instead and the current one keeps serving. :meth:`Supervisor.replace`
with a check stops the old generation first, and starts the last environment
that was ready again if the new one fails. Stop signals reach every
generation; readiness reports come from other threads through the request queue.
"""

from __future__ import annotations

import _thread
import os
import time

from envwrap import log
from envwrap.process import posix
from envwrap.process.child import Child
from envwrap.process.launch import command_error
from envwrap.telemetry import audit
from envwrap.values import signal_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable, Mapping, Sequence
    from types import FrameType

    from envwrap.process.ready import ReadyCheck

    Done = Callable[[object], None]
else:
    import _signal

__all__ = ["JOB_CONTROL", "KILL_GRACE", "STOP_SIGNALS", "Rejected", "Supervisor"]

#: the signals that tell envwrap itself to stop
STOP_SIGNALS = frozenset((_signal.SIGTERM, _signal.SIGINT))
#: forwarded, then envwrap stops itself (dumb-init's job control)
JOB_CONTROL = posix.JOB_CONTROL
#: after SIGKILL, how long to wait for the killed processes to be reaped before
#: giving up on them (a process in uninterruptible sleep cannot die at once)
KILL_GRACE = 5.0

# why a stop is in progress; a "stop" or "exit" supersedes a "replace"
_REPLACE, _EXIT, _STOP = "replace", "exit", "stop"
_HANDOFF, _READY = "handoff", "ready"
# why a generation started (the ``start`` event's reason)
INITIAL, ROTATION, ROLLBACK = "initial", "rotation", "rollback"


class Rejected:
    """The outcome of a :meth:`Supervisor.replace` or :meth:`~Supervisor.handoff`
    whose new generation failed: it exited (``code``) or was not ready in time
    (``code`` None); ``why`` says which, for messages."""

    __slots__ = ("code", "pid", "why")

    def __init__(self, pid: int | None, code: int | None, why: str) -> None:
        self.pid = pid
        self.code = code
        self.why = why

    def __repr__(self) -> str:
        return f"Rejected(pid={self.pid}, code={self.code}, why={self.why!r})"


class _Probation:
    """A generation whose readiness is awaited."""

    __slots__ = ("cancel", "child", "deadline", "done", "environment", "handoff", "previous",
                 "reason")

    def __init__(
        self,
        child: Child,
        environment: dict[str, str],
        *,
        reason: str,
        previous: dict[str, str] | None,
        handoff: bool,
        deadline: float,
        done: list[Done],
        cancel: Callable[[], None],
    ) -> None:
        self.child = child
        self.environment = environment
        self.reason = reason
        #: the environment to go back to if it fails; None: nothing to roll back to
        self.previous = previous
        #: a candidate running next to the current generation
        self.handoff = handoff
        self.deadline = deadline
        self.done = done
        self.cancel = cancel


class _Retiring:
    """An old generation asked to stop, escalated to SIGKILL of its tree at ``deadline``."""

    __slots__ = ("child", "deadline", "escalated")

    def __init__(self, child: Child, deadline: float) -> None:
        self.child = child
        self.deadline = deadline
        self.escalated = False


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
    """Run ``argv`` as envwrap's child until it ends, one generation after another.

    Construct on the main thread, before starting any other thread (signals
    are blocked here, and only threads started afterwards inherit the block),
    then :meth:`run` on the main thread. :meth:`replace`, :meth:`handoff`,
    :meth:`send` and :meth:`request_exit` may be called from any thread, at any
    time (before :meth:`run` too); they return at once, and the optional
    ``done`` callback is called later, on the main thread, with the outcome.
    It must be quick and must not call back into the supervisor synchronously.

    ``passed_fds`` (``--listen`` sockets) reach every generation on fds 3, 4,
    ...; :attr:`extra_environment` is added to every generation's environment;
    ``ready`` (a :class:`~envwrap.process.ready.ReadyCheck`, already open) and
    ``ready_timeout`` decide when a generation counts as ready (see the module
    docstring). Only one generation runs at a time unless :meth:`handoff` is used.
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
        passed_fds: Sequence[int] = (),
        ready: ReadyCheck | None = None,
        ready_timeout: float = 60.0,
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
        # generations (see the module docstring)
        #: descriptors every generation gets on 3, 4, ... (``--listen``)
        self.passed_fds = tuple(passed_fds)
        #: variables added to every generation's environment (LISTEN_FDS, NOTIFY_SOCKET)
        self.extra_environment: dict[str, str] = {}
        self.ready = ready
        self.ready_timeout = ready_timeout
        self._next_reason = ROTATION
        #: the environment of the last generation that was ready (what to roll back to)
        self._verified: dict[str, str] = dict(environment)
        self._probation: _Probation | None = None
        self._candidate: Child | None = None
        self._retiring: list[_Retiring] = []

    # --- requests, from any thread ---------------------------------------------------

    def replace(self, environment: Mapping[str, str], done: Done | None = None) -> None:
        """Stop the running generation, wait until its whole tree is gone, start
        a new one with ``environment``. Requests that arrive while one is in
        progress are merged: the last environment wins. ``done`` gets the new
        PID, or None if envwrap stopped instead.
        """
        self._request(_REPLACE, dict(environment), done)

    def handoff(self, environment: Mapping[str, str], done: Done | None = None) -> None:
        """Start a new generation with ``environment`` while the current one runs;
        once it is ready, retire the current one. Needs a readiness check.

        ``done`` gets the new PID once it is ready (and the old generation has been
        asked to stop), a :class:`Rejected` when it failed (it is stopped, the
        current generation keeps running), or None when a newer handoff
        superseded it or envwrap stops.
        """
        self._request(_HANDOFF, dict(environment), done)

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
                self._spawn(self._environment, INITIAL)
            except OSError as exc:
                raise command_error(self.argv[0], exc) from None
            assert self._child is not None
            self._watch_ready(self._child, self._environment, reason=INITIAL, previous=None,
                              handoff=False, done=[])
            while self._result is None:
                self._step(self._signals.wait(self._timeout()))
            return self._result
        except BaseException:
            child = self._child
            if child is not None and child.alive and self._result is None:
                child.kill_tree()  # a bug in envwrap must not leave the program behind
            for other in self._others():
                other.kill_tree()
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
        self._drop_probation(retire=False)
        if self._terminal is not None and self._child is not None:
            self._reclaim_terminal(self._child)

    def _timeout(self) -> float | None:
        """Seconds until the next deadline; None (block) when there is none."""
        deadlines = [r.deadline for r in self._retiring]
        if self._deadline is not None:
            deadlines.append(self._deadline)
        if self._probation is not None:
            deadlines.append(self._probation.deadline)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self._clock())

    def _step(self, signals: list[int]) -> None:
        for signum in signals:
            self._on_signal(signum)
        self._reap()
        self._on_commands()
        self._on_time()
        self._on_generation_time()
        self._prune_retired()
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
            log.info("stopping the program", signal=signal_name(signum))
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
        log.debug("stopping envwrap with the program", signal=signal_name(signum))
        self._job_stopped = True
        if self._child is not None:
            self._reclaim_terminal(self._child)  # the shell will want it back
        os.kill(os.getpid(), _signal.SIGSTOP)

    def _forward(self, signum: int) -> bool:
        child = self._child
        if child is None or not child.alive:
            log.debug("no program to forward a signal to", signal=signal_name(signum))
            return False
        if log.enabled("debug"):
            log.debug("forwarding", signal=signal_name(signum), pid=child.pid)
        return child.signal(signum)

    # --- children --------------------------------------------------------------------

    def _spawn(self, environment: dict[str, str], reason: str = ROTATION) -> None:
        self._child = self._launch(environment, reason, terminal=True)
        self._environment = environment

    def _launch(self, environment: dict[str, str], reason: str, *, terminal: bool) -> Child:
        """Start one generation (``terminal``: it may take the terminal)."""
        assert self._slate is not None
        tty = self._terminal if terminal else None
        if tty is not None and posix.terminal_owner(tty) != os.getpgrp():
            tty = None  # a background job does not take the terminal
        child = Child.start(
            self.argv, {**environment, **self.extra_environment}, self._slate,
            stdio=self.stdio, terminal=tty, passed=self.passed_fds, cwd=self.cwd,
        )
        log.info("started the program", program=self.argv[0], pid=child.pid, reason=reason)
        audit.record("start", pid=child.pid, reason=reason)
        return child

    def _reap(self) -> None:
        changes, self._children_left = posix.reap(watch_stops=True)
        for pid, status in changes:
            child = self._child
            if child is None or pid != child.pid or not child.alive:
                if not self._reap_generation(pid, status) and (
                    os.WIFEXITED(status) or os.WIFSIGNALED(status)
                ):
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
        audit.record("child_exit", pid=child.pid, code=child.exit_code)
        self._reclaim_terminal(child)
        if self._stopping is not None:
            return  # _advance waits for the rest of the tree
        if self._current_exited(child):
            return
        # Nothing outlives the program's own end. The leaders die with envwrap
        # anyway (PDEATHSIG); this reaches the rest of their process groups.
        candidate = self._candidate
        if candidate is not None and candidate.alive:
            candidate.signal(self.kill_signal)
        for retiring in self._retiring:
            retiring.child.signal(posix.SIGKILL)  # asked to stop already
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
        self._drop_probation(retire=False)
        sent = self._stop_signal = self.kill_signal if signum is None else signum
        candidate = self._candidate
        if reason != _REPLACE and candidate is not None and candidate.alive:
            # a stop reaches every generation: retiring ones were asked already
            candidate.signal(sent)
            if candidate.stopped and sent != _signal.SIGCONT:
                candidate.signal(_signal.SIGCONT)
        child = self._child
        if child is not None and child.alive:
            log.debug("asking the program to stop", pid=child.pid,
                      signal=signal_name(sent))
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
            for other in self._others():
                killed += other.kill_tree()
            log.warning(
                f"the program did not stop within {self.kill_timeout:g}s of "
                f"{signal_name(self._stop_signal)}; sent SIGKILL to its process tree",
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
        if not self._abandoned and any(other.alive for other in self._others()):
            return  # another generation (a handoff's) is still on its way out
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
        reason, self._next_reason = self._next_reason, ROTATION
        previous = self._verified if reason == ROTATION and self.ready is not None else None
        try:
            self._spawn(environment, reason)
        except OSError as exc:
            error = command_error(self.argv[0], exc)
            if previous is not None and previous != environment:
                log.error(f"cannot restart the program: {error}; starting it again with "
                          "the previous environment")
                for done in waiting:
                    done(Rejected(None, error.exit_code, str(error)))
                self._next_environment, self._next_reason = previous, ROLLBACK
                self._start_next()
                return
            log.error(f"cannot restart the program: {error}")
            self._result = error.exit_code
            for done in waiting:
                done(None)
            return
        assert self._child is not None
        self._watch_ready(self._child, environment, reason=reason, previous=previous,
                          handoff=False, done=waiting)

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
                self._next_reason = ROTATION
                if done is not None:
                    self._replace_done.append(done)
                self._begin_stop(_REPLACE)
            elif kind == _HANDOFF:
                assert isinstance(value, dict)
                self._begin_handoff(value, done)
            elif kind == _READY:
                assert isinstance(value, int)
                self._on_ready(value)
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

    # --- generations: readiness, handoff, rollback (DESIGN §9) ----------------------------

    def _others(self) -> list[Child]:
        """The live generations other than the current one (a candidate, retiring ones)."""
        others = [r.child for r in self._retiring if r.child.alive or r.child.group_alive()]
        if self._candidate is not None:
            others.append(self._candidate)
        return others

    def _watch_ready(
        self,
        child: Child,
        environment: dict[str, str],
        *,
        reason: str,
        previous: dict[str, str] | None,
        handoff: bool,
        done: list[Done],
    ) -> None:
        """Put a new generation on probation, or call it ready at once without a check."""
        check = self.ready
        if check is None:
            self._verified = environment
            audit.record("ready", pid=child.pid)
            for callback in done:
                callback(child.pid)
            return

        def report(pid: int) -> None:  # on the check's thread
            self._request(_READY, pid, None)

        self._probation = _Probation(
            child, environment, reason=reason, previous=previous, handoff=handoff,
            deadline=self._clock() + self.ready_timeout, done=done, cancel=lambda: None,
        )
        self._probation.cancel = check.watch(child.pid, report)

    def _drop_probation(self, retire: bool = True) -> None:
        """Stop waiting for readiness (a stop began, or a newer change supersedes it);
        a candidate is retired unless ``retire`` is False (the caller stops it)."""
        probation, self._probation = self._probation, None
        if probation is None:
            return
        probation.cancel()
        if retire and probation.handoff and probation.child.alive:
            self._candidate = None
            self._retire(probation.child)
        for callback in probation.done:
            callback(None)

    def _on_ready(self, pid: int) -> None:
        probation = self._probation
        if probation is None or probation.child.pid != pid or not probation.child.alive:
            return  # a late report: the generation failed or was superseded already
        self._probation = None
        probation.cancel()
        child = probation.child
        log.info("the program is ready", pid=pid)
        audit.record("ready", pid=pid)
        self._verified = probation.environment
        if probation.handoff:
            old = self._child
            self._candidate = None
            self._child = child
            self._environment = probation.environment
            terminal = self._terminal
            if terminal is not None and old is not None and posix.terminal_owner(terminal) in (
                old.pid, os.getpgrp()
            ):
                posix.take_terminal(terminal, child.pid)  # the terminal follows the program
            if old is not None and old.alive:
                self._retire(old)
        for callback in probation.done:
            callback(pid)

    def _fail_probation(self, why: str) -> None:
        """The generation on probation exited or was not ready in time."""
        probation = self._probation
        assert probation is not None
        self._probation = None
        probation.cancel()
        child = probation.child
        if probation.previous is None:
            for callback in probation.done:
                callback(None)
            if probation.reason != ROLLBACK:
                # the first generation: readiness only reports (DESIGN §9)
                log.warning(f"the program is not ready: {why}", pid=child.pid)
                return
            log.error(f"the program fails with the previous environment too ({why}); stopping",
                      pid=child.pid)
            if child.alive and self._stopping is None:
                self._begin_stop(_STOP)
            return
        code = None if child.alive else child.exit_code
        rejected = Rejected(child.pid, code, why)
        if probation.handoff:
            self._candidate = None
            if child.alive:
                self._retire(child)
            log.error(f"the new generation failed ({why}); the previous one keeps running",
                      pid=child.pid)
        else:
            log.error(f"the new generation failed ({why}); starting the program again with "
                      "the previous environment", pid=child.pid)
            self._next_environment, self._next_reason = probation.previous, ROLLBACK
            self._begin_stop(_REPLACE)
        for callback in probation.done:
            callback(rejected)

    def _current_exited(self, child: Child) -> bool:
        """The current generation ended on its own; True when envwrap carries on."""
        probation = self._probation
        if probation is None:
            return False
        if probation.child is child:
            if probation.previous is None:
                if probation.reason == ROLLBACK:
                    log.error("the program fails with the previous environment too (it exited "
                              f"with code {child.exit_code}); envwrap exits with its code",
                              pid=child.pid)
                self._drop_probation()  # the first generation (or a rollback) ended
                return False
            self._fail_probation(f"it exited with code {child.exit_code}")
            return True
        candidate = self._candidate
        if probation.handoff and candidate is not None and candidate.alive:
            # The old generation died during a handoff: the candidate takes over,
            # unverified, with nothing to roll back to.
            log.warning("the program exited during a handoff; the new generation takes over",
                        pid=child.pid)
            self._candidate = None
            self._child = candidate
            self._environment = probation.environment
            probation.previous = None
            probation.handoff = False
            return True
        return False

    def _begin_handoff(self, environment: dict[str, str], done: Done | None) -> None:
        waiting = [done] if done is not None else []
        current = self._child
        if (self._result is not None or self._stopping is not None or current is None
                or not current.alive):
            for callback in waiting:
                callback(None)
            return
        if self.ready is None:  # pragma: no cover -- the command line requires --ready
            self._next_environment, self._next_reason = environment, ROTATION
            self._replace_done.extend(waiting)
            self._begin_stop(_REPLACE)
            return
        self._drop_probation()  # a newer change supersedes a candidate still starting
        try:
            candidate = self._launch(environment, ROTATION, terminal=False)
        except OSError as exc:
            error = command_error(self.argv[0], exc)
            log.error(f"cannot start the new generation: {error}; the current one keeps running")
            for callback in waiting:
                callback(Rejected(None, error.exit_code, str(error)))
            return
        self._candidate = candidate
        self._watch_ready(candidate, environment, reason=ROTATION, previous=self._environment,
                          handoff=True, done=waiting)

    def _retire(self, child: Child) -> None:
        """Ask an old generation to stop; SIGKILL its tree after ``--kill-timeout``."""
        log.info("asking the previous generation to stop", pid=child.pid,
                 signal=signal_name(self.kill_signal))
        child.signal(self.kill_signal)
        if child.stopped and self.kill_signal != _signal.SIGCONT:
            child.signal(_signal.SIGCONT)
        self._retiring.append(_Retiring(child, self._clock() + self.kill_timeout))

    def _reap_generation(self, pid: int, status: int) -> bool:
        """A state change of a candidate or retiring generation; False if it is neither."""
        candidate = self._candidate
        retiring = [r.child for r in self._retiring if r.child.pid == pid and r.child.alive]
        if candidate is not None and candidate.pid == pid and candidate.alive:
            child = candidate
        elif retiring:
            child = retiring[0]
        else:
            return False
        if os.WIFSTOPPED(status) or os.WIFCONTINUED(status):
            child.stopped = os.WIFSTOPPED(status)
            return True
        child.exited(status)
        log.info("a generation of the program exited", pid=pid, code=child.exit_code)
        audit.record("child_exit", pid=pid, code=child.exit_code)
        probation = self._probation
        if probation is not None and probation.child is child:
            self._fail_probation(f"it exited with code {child.exit_code}")
        elif child is candidate:
            self._candidate = None
        return True

    def _on_generation_time(self) -> None:
        now = self._clock()
        probation = self._probation
        if probation is not None and now >= probation.deadline:
            self._fail_probation(f"not ready within {self.ready_timeout:g}s")
        for retiring in list(self._retiring):
            if now < retiring.deadline:
                continue
            child = retiring.child
            if not retiring.escalated:
                spare = [c for c in (self._child, self._candidate) if c is not None and c.alive]
                killed = child.kill_tree(spare=spare)
                log.warning(
                    f"the previous generation did not stop within {self.kill_timeout:g}s of "
                    f"{signal_name(self.kill_signal)}; sent SIGKILL to its process tree",
                    pid=child.pid, processes=killed,
                )
                retiring.escalated = True
                retiring.deadline = now + KILL_GRACE
            else:
                log.error("processes of a previous generation survive SIGKILL; no longer "
                          "waiting for them", pid=child.pid)
                self._retiring.remove(retiring)

    def _prune_retired(self) -> None:
        """Forget retired generations once their leader is reaped and their group empty."""
        self._retiring = [
            r for r in self._retiring if r.child.alive or r.child.group_alive()
        ]
