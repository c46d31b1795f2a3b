"""Supervise mode's main-thread loop: signals, reaping, and requests from threads.

envwrap stays the parent of the program (``--init``, ``--watch``, ``--mask``)
and does, at least, what tini and dumb-init do:

- The program runs in its own process group. Every catchable signal envwrap
  receives is forwarded to that group exactly once, in arrival order, as that
  same signal -- except SIGCHLD, envwrap's own SIGPIPE, SIGXFSZ and faults (those
  another process sends are forwarded: :mod:`~envwrap.process.signals`), and
  those envwrap was started with ignored (they stay ignored, for the program too).
- SIGTERM or SIGINT to envwrap also means "stop": SIGINT is forwarded as
  SIGINT, SIGTERM as the kill signal, to every generation (see
  :mod:`~envwrap.process.generations`); envwrap then exits with the program's
  code (128+N for death by signal N). Job control: :mod:`~envwrap.process.terminal`.
- envwrap is PID 1 or a child subreaper, and reaps every process that ends up
  its child. This loop is the only caller of ``waitpid``; the program is
  recognised by its PID, so its status is never lost to the reaper.

Signals and requests from other threads come through
:mod:`~envwrap.process.signals`, one at a time. With a readiness check,
:meth:`Supervisor.replace` starts the last environment that was ready again if
the new generation fails; :meth:`Supervisor.handoff` retires the old generation
once the new one is ready, or the new one if it fails.
"""

from __future__ import annotations

import os

from envwrap import log
from envwrap.process import ports, posix, prctl, signals
from envwrap.process.child import Child
from envwrap.process.generations import (
    CANDIDATE,
    CURRENT,
    INITIAL,
    ROLLBACK,
    ROTATION,
    Generation,
    Generations,
    Pending,
    Rejected,
)
from envwrap.process.launch import command_error
from envwrap.process.terminal import Terminal
from envwrap.values import signal_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable, Mapping

    from envwrap.process.spec import ProcessSpec

    Done = Callable[[object], None]
else:
    import _signal

__all__ = ["STOP_SIGNALS", "Rejected", "Supervisor"]

#: the signals that tell envwrap itself to stop
STOP_SIGNALS = frozenset((_signal.SIGTERM, _signal.SIGINT))

# why a stop is in progress; a "stop" or "exit" supersedes a "replace"
_REPLACE, _EXIT, _STOP = "replace", "exit", "stop"
_HANDOFF, _READY, _SEND = "handoff", "ready", "send"


class Supervisor:
    """Run the program of a :class:`~envwrap.process.spec.ProcessSpec` until it ends,
    one generation after another.

    Construct on the main thread, before starting any other thread (signals
    are blocked here, and only threads started afterwards inherit the block;
    or pass ``taken``, taken earlier), then :meth:`run` on the main thread.
    :meth:`replace`, :meth:`handoff`, :meth:`send` and :meth:`request_exit` may
    be called from any thread, at any time (before :meth:`run` too); they return
    at once, and the optional ``done`` callback is called later, on the main
    thread, with the outcome; it must be quick and must not call back into the
    supervisor synchronously.
    """

    def __init__(self, spec: ProcessSpec, taken: signals.TakenSignals | None = None) -> None:
        self._spec = spec
        self._table = Generations(spec.kill_timeout, spec.clock)
        taken = taken if taken is not None else signals.TakenSignals()
        self._slate = taken.slate
        self._inbox = signals.Inbox(taken.source)
        self._terminal = Terminal(None)
        self._extra_environment = dict(spec.extra_environment)
        self._adopts_orphans = False
        self._children_left = True
        self._result: int | None = None
        #: why a stop is in progress (None: none is)
        self._stopping: str | None = None
        self._exit_code: int | None = None
        self._next: Pending | None = None

    # --- requests, from any thread ---------------------------------------------------

    def replace(self, environment: Mapping[str, str], done: Done | None = None) -> None:
        """Stop the running generation, wait until its whole tree is gone, start
        a new one with ``environment``. Requests that arrive while one is in
        progress are merged: the last environment wins. ``done`` gets the new
        PID (once ready, with a check), a :class:`Rejected` when it failed and
        the previous environment was started again, or None if superseded or
        envwrap stopped instead.
        """
        self._inbox.put(_REPLACE, dict(environment), done)

    def handoff(self, environment: Mapping[str, str], done: Done | None = None) -> None:
        """Start a new generation with ``environment`` while the current one runs;
        once it is ready, retire the current one. Needs a readiness check.

        ``done`` gets the new PID once it is ready (and the old generation has been
        asked to stop), a :class:`Rejected` when it failed (it is stopped, the
        current generation keeps running), or None when a newer handoff
        superseded it or envwrap stops.
        """
        self._inbox.put(_HANDOFF, dict(environment), done)

    def send(self, signum: int, done: Done | None = None) -> None:
        """Send ``signum`` to the program's group; ``done`` gets whether there was one."""
        self._inbox.put(_SEND, signum, done)

    def request_exit(self, code: int, done: Done | None = None) -> None:
        """Stop the program (as on SIGTERM), then make :meth:`run` return ``code``."""
        self._inbox.put(_EXIT, code, done)

    # --- main thread -----------------------------------------------------------------

    def run(self) -> int:
        """Start the program and supervise it; return envwrap's exit code.

        Raises :class:`~envwrap.errors.CommandError` (126/127) when the first
        generation cannot be executed. Must be called on the main thread.
        """
        spec = self._spec
        self._adopts_orphans = prctl.become_reaper()
        self._terminal = Terminal(posix.controlling_terminal())
        try:
            if spec.ready is not None:
                spec.ready.open()  # its thread inherits the signals blocked above
                self._extra_environment.update(spec.ready.environment())
            try:
                generation = self._start(dict(spec.environment), INITIAL, None)
            except OSError as exc:
                raise command_error(spec.argv[0], exc) from None
            self._watch_ready(generation, [])
            while self._result is None:
                deadline = self._table.next_deadline()  # None: no deadline, block
                timeout = None if deadline is None else max(0.0, deadline - spec.clock())
                self._step(self._inbox.source.wait(timeout))
            return self._result
        except BaseException:
            if self._result is None:
                self._table.kill_all()  # a bug in envwrap must not leave the program behind
            raise
        finally:
            self._close()

    def _close(self) -> None:
        waiting = self._inbox.close()
        if self._next is not None:
            waiting += self._next.waiting
            self._next = None
        for done in waiting + self._table.end_probation():
            done(None)
        current = self._table.current()
        if current is not None:
            self._terminal.reclaim(current.child)
        if self._spec.ready is not None:
            self._spec.ready.close()

    def _step(self, signums: list[int]) -> None:
        for signum in signums:
            self._on_signal(signum)
        self._reap()
        self._on_requests()
        late = self._table.late_for_readiness()
        if late is not None:
            self._fail_probation(late, f"not ready within {self._spec.ready_timeout:g}s")
        self._table.escalate()
        self._table.prune(self._children_left and self._adopts_orphans)
        self._advance()

    # --- signals ---------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        if signum == _signal.SIGCHLD:
            return  # reaped in every step
        if signum in STOP_SIGNALS and self._stopping in (None, _REPLACE):
            log.info("stopping the program", signal=signal_name(signum))
            if signum != _signal.SIGTERM and self._stopping is not None:
                self._forward(signum)  # a replacement already sent the kill signal
            self._begin_stop(_STOP, signum=None if signum == _signal.SIGTERM else signum)
            return
        current = self._current_child()
        if signum == _signal.SIGCONT:
            self._terminal.continued(current)
        if signum in posix.JOB_CONTROL:
            self._forward(self._terminal.job_signal(signum))
            self._terminal.stop_self(signum, current)
            return
        self._forward(signum)

    def _current_child(self) -> Child | None:
        current = self._table.current()
        return None if current is None else current.child

    def _forward(self, signum: int) -> bool:
        child = self._current_child()
        if child is None or not child.alive:
            log.debug("no program to forward a signal to", signal=signal_name(signum))
            return False
        if log.enabled("debug"):
            log.debug("forwarding", signal=signal_name(signum), pid=child.pid)
        return child.signal(signum)

    # --- children --------------------------------------------------------------------

    def _start(self, environment: dict[str, str], reason: str,
               rollback: dict[str, str] | None, role: str = CURRENT) -> Generation:
        """Start one generation (only a current one may take the terminal)."""
        spec = self._spec
        child = Child.start(
            spec.argv, {**environment, **self._extra_environment}, self._slate,
            stdio=spec.stdio, passed=spec.passed_fds, cwd=spec.cwd,
            tap=None if spec.ready is None else spec.ready.tap(spec.stdio),
            terminal=self._terminal.for_new_generation() if role == CURRENT else None,
        )
        log.info("started the program", program=spec.argv[0], pid=child.pid, reason=reason)
        spec.on_event("start", pid=child.pid, reason=reason)
        generation = Generation(child, environment, role, reason, rollback)
        self._table.add(generation)
        return generation

    def _reap(self) -> None:
        changes, self._children_left = posix.reap(watch_stops=True)
        for pid, status in changes:
            generation = self._table.get(pid)
            if generation is None or not generation.child.alive:
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    log.debug("reaped an orphan", pid=pid)
                continue
            child = generation.child
            if os.WIFSTOPPED(status) or os.WIFCONTINUED(status):
                child.stopped = os.WIFSTOPPED(status)
                if child.stopped and generation.role == CURRENT:
                    self._terminal.child_stopped(child)
                continue
            child.exited(status)
            self._on_exit(generation)

    def _on_exit(self, generation: Generation) -> None:
        child = generation.child
        current = generation.role == CURRENT
        log.info("the program exited" if current else "a generation of the program exited",
                 pid=child.pid, code=child.exit_code)
        self._spec.on_event("child_exit", pid=child.pid, code=child.exit_code)
        if not current:
            if generation.on_probation:
                self._fail_probation(generation, f"it exited with code {child.exit_code}")
            self._table.stop(generation, self._spec.kill_signal)  # gone: leaves the table
            return
        self._terminal.reclaim(child)
        if self._stopping is not None or self._carry_on(generation):
            return  # a stop waits for the rest of the tree (see _advance)
        # Nothing outlives the program's own end. The leaders die with envwrap
        # anyway (PDEATHSIG); this reaches the rest of their process groups.
        for other in self._table:
            if other is not generation and other.child.alive:
                # a candidate gets the kill signal; a retiring one was asked already
                other.child.signal(
                    self._spec.kill_signal if other.role == CANDIDATE else posix.SIGKILL)
        # It ended on its own, which ends envwrap. What it left in its process
        # group gets the kill signal, as dumb-init does, but is not waited for:
        # the program's exit must not be delayed by its leftovers.
        child.signal(self._spec.kill_signal)
        self._result = child.exit_code

    def _carry_on(self, generation: Generation) -> bool:
        """The current generation ended on its own; True when envwrap carries on."""
        if generation.on_probation:
            if generation.rollback is None:
                if generation.reason == ROLLBACK:
                    log.error("the program fails with the previous environment too (it exited "
                              f"with code {generation.child.exit_code}); envwrap exits with "
                              "its code", pid=generation.pid)
                for done in generation.end_probation():  # the first generation ended
                    done(None)
                return False
            self._fail_probation(generation, f"it exited with code {generation.child.exit_code}")
            return True
        candidate = self._table.candidate()
        if candidate is not None and candidate.on_probation and candidate.child.alive:
            # The old generation died during a handoff: the candidate takes over,
            # unverified, with nothing to roll back to.
            log.warning("the program exited during a handoff; the new generation takes over",
                        pid=generation.pid)
            candidate.rollback = None
            self._table.promote(candidate)
            self._table.stop(generation, self._spec.kill_signal)  # gone: leaves the table
            return True
        return False

    # --- stopping --------------------------------------------------------------------

    def _begin_stop(self, reason: str, signum: int | None = None) -> None:
        """Stop every generation with ``signum`` (default: the kill signal)."""
        if self._stopping is not None:
            if self._stopping == _REPLACE and reason != _REPLACE:
                self._stopping = reason  # the program is on its way out already
            return
        self._stopping = reason
        for done in self._table.end_probation():
            done(None)
        sent = self._spec.kill_signal if signum is None else signum
        for generation in self._table:
            self._table.stop(generation, sent)

    def _advance(self) -> None:
        """Finish a stop once every generation and every process it left are gone."""
        if self._stopping is None or not self._table.settled():
            return
        reason, self._stopping = self._stopping, None
        current = self._table.current()
        if current is None:
            code = 0
        elif current.child.alive:
            code = 128 + posix.SIGKILL  # given up on: it survived SIGKILL
        else:
            code = current.child.exit_code
        if reason == _STOP:
            self._result = code
        elif reason == _EXIT:
            self._result = self._exit_code if self._exit_code is not None else code
        else:
            self._start_next()

    def _start_next(self) -> None:
        following, self._next = self._next, None
        current = self._table.current()
        if following is None:  # pragma: no cover -- a replace always says what comes next
            assert current is not None
            following = Pending(current.environment, ROTATION)
        environment, reason, waiting = following.environment, following.reason, following.waiting
        rollback = None
        if reason == ROTATION and self._spec.ready is not None and current is not None:
            rollback = current.fallback  # the last environment that was ready
        try:
            generation = self._start(environment, reason, rollback)
        except OSError as exc:
            error = command_error(self._spec.argv[0], exc)
            if rollback is not None and rollback != environment:
                log.error(f"cannot restart the program: {error}; starting it again with "
                          "the previous environment")
                for done in waiting:
                    done(Rejected(None, error.exit_code, str(error)))
                self._next = Pending(rollback, ROLLBACK)
                self._start_next()
                return
            log.error(f"cannot restart the program: {error}")
            self._result = error.exit_code
            for done in waiting:
                done(None)
            return
        self._watch_ready(generation, waiting)

    # --- requests ----------------------------------------------------------------------

    def _on_requests(self) -> None:
        for kind, value, done in self._inbox.take():
            if kind in (_REPLACE, _HANDOFF):
                assert isinstance(value, dict)
                (self._replace if kind == _REPLACE else self._begin_handoff)(value, done)
                continue
            assert isinstance(value, int)
            if kind == _READY:
                self._on_ready(value)
                continue
            if kind == _SEND:
                outcome: object = self._forward(value)
            else:
                outcome = value
                if self._exit_code is None and self._stopping in (None, _REPLACE):
                    self._exit_code = value
                    self._begin_stop(_EXIT)
            if done is not None:
                done(outcome)

    def _replace(self, environment: dict[str, str], done: Done | None) -> None:
        if self._result is not None or self._stopping in (_STOP, _EXIT):
            if done is not None:
                done(None)
            return
        waiting = self._next.waiting if self._next is not None else []
        self._next = Pending(environment, ROTATION)  # the last environment wins
        self._next.waiting = waiting
        if done is not None:
            waiting.append(done)
        self._begin_stop(_REPLACE)

    # --- generations: readiness, handoff, rollback ----------------------------------------

    def _watch_ready(self, generation: Generation, waiting: list[Done]) -> None:
        """Put a new generation on probation, or call it ready at once without a check."""
        check = self._spec.ready
        if check is None:
            generation.verified = True
            self._spec.on_event("ready", pid=generation.pid)
            for done in waiting:
                done(generation.pid)
            return

        def report(pid: int) -> None:  # on the check's thread
            self._inbox.put(_READY, pid, None)

        generation.watch(check, self._spec.clock() + self._spec.ready_timeout, waiting, report)

    def _on_ready(self, pid: int) -> None:
        generation = self._table.get(pid)
        if generation is None or not generation.on_probation or not generation.child.alive:
            return  # a late report: the generation failed or was superseded already
        waiting = generation.end_probation()
        log.info("the program is ready", pid=pid)
        self._spec.on_event("ready", pid=pid)
        generation.verified = True
        if generation.role == CANDIDATE:
            old = self._table.promote(generation)
            if old is not None:
                self._terminal.follow(old.child, generation.child)
                self._table.retire(old, self._spec.kill_signal)
        for done in waiting:
            done(pid)

    def _fail_probation(self, generation: Generation, why: str) -> None:
        """The generation on probation exited or was not ready in time."""
        waiting = generation.end_probation()
        child = generation.child
        if generation.rollback is None:
            for done in waiting:
                done(None)
            if generation.reason != ROLLBACK:
                # the first generation: readiness only reports
                log.warning(f"the program is not ready: {why}", pid=child.pid)
                return
            log.error(f"the program fails with the previous environment too ({why}); stopping",
                      pid=child.pid)
            if child.alive and self._stopping is None:
                self._begin_stop(_STOP)
            return
        code = None if child.alive else child.exit_code
        rejected = Rejected(child.pid, code, why)
        if generation.role == CANDIDATE:
            self._table.retire(generation, self._spec.kill_signal)
            running = self._table.current()
            note = None  # an exit beside a generation that holds its own port: say so
            if code is not None and running is not None and not self._spec.passed_fds:
                note = ports.address_conflict(running.pid)
            if note is not None:
                rejected = Rejected(child.pid, code, f"{why}; {note}", address_conflict=True)
            log.error(f"the new generation failed ({rejected.why}); the previous one keeps "
                      "running", pid=running.pid if running else None, failed=child.pid)
        else:
            log.error(f"the new generation failed ({why}); starting the program again with "
                      "the previous environment", pid=child.pid)
            self._next = Pending(generation.rollback, ROLLBACK)
            self._begin_stop(_REPLACE)
        for done in waiting:
            done(rejected)

    def _begin_handoff(self, environment: dict[str, str], done: Done | None) -> None:
        waiting = [done] if done is not None else []
        current = self._table.current()
        if (self._result is not None or self._stopping is not None or current is None
                or not current.child.alive):
            for callback in waiting:
                callback(None)
            return
        if self._spec.ready is None:  # pragma: no cover -- the command line requires --ready
            self._replace(environment, done)
            return
        superseded = self._table.on_probation()  # a candidate still starting, or the current
        if superseded is not None:
            for callback in superseded.end_probation():
                callback(None)
            if superseded.role == CANDIDATE:
                self._table.retire(superseded, self._spec.kill_signal)
        try:
            candidate = self._start(environment, ROTATION, current.environment, CANDIDATE)
        except OSError as exc:
            error = command_error(self._spec.argv[0], exc)
            log.error(f"cannot start the new generation: {error}; the current one keeps running",
                      pid=current.pid)
            for callback in waiting:
                callback(Rejected(None, error.exit_code, str(error)))
            return
        self._watch_ready(candidate, waiting)
