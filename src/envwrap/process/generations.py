"""The generations of the program: one table, one way to stop a generation.

Each start of the program is a generation. The *current* one gets forwarded
signals and gives envwrap its exit code. A handoff starts a *candidate* next to
it; once the candidate is ready it becomes current and the old one is
*retiring*. With a readiness check a new generation is on *probation* (a
deadline, and the callbacks waiting for its outcome) until the check passes,
it exits, or the deadline passes.

Every generation is stopped the same way, whether envwrap stops, replaces the
program or retires an old generation after a handoff (consul-template's one
``kill`` path): ``--kill-signal`` to its process group; after
``--kill-timeout``, SIGKILL to its process tree (sparing the generations that
are not being stopped); after :data:`KILL_GRACE` more, envwrap stops waiting
for processes that survive SIGKILL. A stopped generation leaves the table once
its leader is reaped and its process group is empty -- and, when it is the only
one left, once every orphan envwrap adopted is gone too (they can only be its).
"""

from __future__ import annotations

from envwrap import log
from envwrap.values import signal_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable, Iterator

    from envwrap.process.child import Child
    from envwrap.process.ready import ReadyCheck

    Done = Callable[[object], None]
else:
    import _signal

__all__ = ["CANDIDATE", "CURRENT", "KILL_GRACE", "RETIRING", "Generation", "Generations",
           "Pending", "Rejected"]

#: after SIGKILL, how long to wait for the killed processes to be reaped before
#: giving up on them (a process in uninterruptible sleep cannot die at once)
KILL_GRACE = 5.0

# a generation's role
CURRENT, CANDIDATE, RETIRING = "current", "candidate", "retiring"
# why a generation started (the ``start`` event's reason)
INITIAL, ROTATION, ROLLBACK = "initial", "rotation", "rollback"


class Rejected:
    """The outcome of a replace or handoff whose new generation failed: it
    exited (``code``) or was not ready in time (``code`` None); ``why`` says
    which, for messages. ``address_conflict``: it exited during a handoff
    while the running generation holds a port of its own, so the new secrets
    are likely not to blame (:mod:`~envwrap.process.ports`)."""

    __slots__ = ("address_conflict", "code", "pid", "why")

    def __init__(self, pid: int | None, code: int | None, why: str,
                 address_conflict: bool = False) -> None:
        self.pid = pid
        self.code = code
        self.why = why
        self.address_conflict = address_conflict

    def __repr__(self) -> str:
        return f"Rejected(pid={self.pid}, code={self.code}, why={self.why!r})"


class Pending:
    """The generation to start once the stopping one is gone (requests merged)."""

    __slots__ = ("environment", "reason", "waiting")

    def __init__(self, environment: dict[str, str], reason: str) -> None:
        self.environment = environment
        self.reason = reason
        self.waiting: list[Done] = []


def _no_watch() -> None:
    """The cancel function of a generation nobody watches."""


class Generation:
    """One row of the table: a started program, what it runs on, where it stands."""

    __slots__ = ("cancel", "child", "environment", "escalated", "finished", "ready_deadline",
                 "reason", "role", "rollback", "stop_deadline", "stop_signal", "verified",
                 "waiting")

    def __init__(self, child: Child, environment: dict[str, str], role: str, reason: str,
                 rollback: dict[str, str] | None) -> None:
        self.child = child
        self.environment = environment
        self.role = role
        self.reason = reason
        #: the environment to start again if this one fails; None: nothing to go back to
        self.rollback = rollback
        #: known good: it was ready, or it is the first or a rollback (nothing to compare with)
        self.verified = reason != ROTATION
        # probation: until the check reports, the callbacks wait for the outcome
        self.ready_deadline: float | None = None
        self.waiting: list[Done] = []
        self.cancel: Callable[[], None] = _no_watch
        # stopping
        self.stop_deadline: float | None = None
        self.stop_signal = 0
        self.escalated = False
        #: stopped and gone, or given up on (processes that survive SIGKILL)
        self.finished = False

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def on_probation(self) -> bool:
        return self.ready_deadline is not None

    @property
    def stopping(self) -> bool:
        return self.stop_deadline is not None or self.finished

    @property
    def fallback(self) -> dict[str, str] | None:
        """What a generation that replaces this one goes back to if it fails."""
        return self.environment if self.verified else self.rollback

    def watch(self, check: ReadyCheck, deadline: float, waiting: list[Done],
              report: Callable[[int], None]) -> None:
        """Put it on probation until ``deadline``; ``waiting`` get the outcome."""
        self.ready_deadline = deadline
        self.waiting = waiting
        self.cancel = check.watch(self.pid, report)

    def end_probation(self) -> list[Done]:
        """Stop watching its readiness; returns the callbacks that were waiting."""
        self.cancel()
        self.cancel = _no_watch
        self.ready_deadline = None
        waiting, self.waiting = self.waiting, []
        return waiting


class Generations:
    """The table, keyed by PID, and the one stop-and-escalate routine."""

    def __init__(self, kill_timeout: float, clock: Callable[[], float]) -> None:
        self.kill_timeout = kill_timeout
        self.clock = clock
        self._rows: dict[int, Generation] = {}

    def __iter__(self) -> Iterator[Generation]:
        return iter(list(self._rows.values()))

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, pid: int) -> Generation | None:
        return self._rows.get(pid)

    def add(self, generation: Generation) -> None:
        """A new generation; a new current one replaces the old, stopped and gone."""
        if generation.role == CURRENT:
            old = self.current()
            if old is not None:
                del self._rows[old.pid]
        self._rows[generation.pid] = generation

    def promote(self, candidate: Generation) -> Generation | None:
        """The candidate becomes current; returns the old current one, now retiring."""
        old = self.current()
        if old is not None:
            old.role = RETIRING
        candidate.role = CURRENT
        return old

    def current(self) -> Generation | None:
        """The generation that gets signals and gives the exit code (alive or not)."""
        for row in self._rows.values():
            if row.role == CURRENT:
                return row
        return None

    def candidate(self) -> Generation | None:
        for row in self._rows.values():
            if row.role == CANDIDATE:
                return row
        return None

    def on_probation(self) -> Generation | None:
        for row in self._rows.values():
            if row.on_probation:
                return row
        return None

    def end_probation(self) -> list[Done]:
        """Stop waiting for any generation's readiness; returns the waiting callbacks."""
        row = self.on_probation()
        return [] if row is None else row.end_probation()

    def late_for_readiness(self) -> Generation | None:
        """The generation on probation, if its deadline has passed."""
        row = self.on_probation()
        if row is None or row.ready_deadline is None or self.clock() < row.ready_deadline:
            return None
        return row

    def next_deadline(self) -> float | None:
        deadlines = [d for row in self._rows.values()
                     for d in (row.ready_deadline, row.stop_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    # --- the one way to stop a generation -----------------------------------------------

    def retire(self, generation: Generation, signum: int) -> None:
        """Ask a generation other than the current one to stop."""
        generation.role = RETIRING
        if generation.child.alive:
            log.info("asking the previous generation to stop", pid=generation.pid,
                     signal=signal_name(signum))
        self.stop(generation, signum)

    def stop(self, generation: Generation, signum: int) -> None:
        """Send ``signum`` to its group; escalate at ``--kill-timeout`` (see :meth:`escalate`)."""
        if generation.stopping:
            return
        generation.stop_signal = signum
        generation.stop_deadline = self.clock() + self.kill_timeout
        child = generation.child
        if child.alive:
            log.debug("asking the program to stop", pid=child.pid, signal=signal_name(signum))
            child.signal(signum)
            if child.stopped and signum != _signal.SIGCONT:
                child.signal(_signal.SIGCONT)  # a stopped process acts on nothing else

    def escalate(self) -> None:
        """At a stopping generation's deadline: SIGKILL its tree; later, give up on it."""
        now = self.clock()
        for row in self:
            if row.stop_deadline is None or now < row.stop_deadline:
                continue
            what = "the program" if row.role == CURRENT else "the previous generation"
            if row.escalated:
                log.error(f"processes of {what} survive SIGKILL; no longer waiting for them",
                          pid=row.pid)
                row.stop_deadline = None
                row.finished = True
                continue
            spare = [other.child for other in self._rows.values()
                     if not other.stopping and other.child.alive]
            killed = row.child.kill_tree(spare=spare)
            log.warning(
                f"{what} did not stop within {self.kill_timeout:g}s of "
                f"{signal_name(row.stop_signal)}; sent SIGKILL to its process tree",
                pid=row.pid, processes=killed,
            )
            row.escalated = True
            row.stop_deadline = now + KILL_GRACE

    def prune(self, orphans_left: bool) -> None:
        """Forget the stopped generations that are gone (the current one stays, for
        its exit code, until a new one replaces it). ``orphans_left``: envwrap
        adopted processes that are still running."""
        for row in self:
            if row.stop_deadline is not None and self._gone(row, orphans_left):
                row.stop_deadline = None
                row.finished = True
                if row.role != CURRENT:
                    del self._rows[row.pid]

    def settled(self) -> bool:
        """Every generation is stopped and gone, or given up on."""
        return all(row.finished for row in self._rows.values())

    def _gone(self, row: Generation, orphans_left: bool) -> bool:
        if row.child.alive or row.child.group_alive():
            return False
        alone = all(other is row or other.finished for other in self._rows.values())
        return not (alone and orphans_left)

    def kill_all(self) -> None:
        """A bug in envwrap must not leave the program behind."""
        for row in self:
            if row.child.alive or row.child.group_alive():
                row.child.kill_tree()
