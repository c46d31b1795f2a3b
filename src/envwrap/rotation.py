"""The rotation policy: the one owner of what the running generation runs on.

A rotation re-renders ``--render`` files, then restarts the program, hands off
to a new generation, signals it, or exits -- only when what the program sees
differs from what runs. A change the stores take back before it is applied
(held by ``--restart-limit``) is never applied; what the log, the audit log and
``/metrics`` report is what runs. The observers (fallback cache, lease revoker,
the ``running`` report behind ``/metrics``) are handed in at construction and
fed from that one state, on one worker thread of the policy's.

This is the seam between the watcher (which knows stores) and the supervisor
(which knows processes); neither knows the other.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from envwrap import log
from envwrap.environment import child_environment
from envwrap.errors import EnvwrapError
from envwrap.process import launch
from envwrap.quiet import QuietTimer
from envwrap.render import render_files
from envwrap.rotation_observers import Observers
from envwrap.telemetry import audit
from envwrap.values import Backoff, signal_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from envwrap.backends import Fetched
    from envwrap.config import Settings
    from envwrap.environment import Composed, SecretEnvironment
    from envwrap.refs import Locator
    from envwrap.restart_limit import RestartWindow
    from envwrap.rotation_observers import Observer

__all__ = [
    "EXIT_ON_CHANGE",
    "ChildControl",
    "ProgramPid",
    "RotationPolicy",
    "changed_variables",
]

#: the exit code of ``--on-change exit`` (EX_TEMPFAIL): "try again", which makes
#: an orchestrator restart the container with the new secrets
EXIT_ON_CHANGE = 75


class ChildControl(Protocol):
    """The supervisor's operations, as the rotation uses them (thread-safe).

    ``done`` callbacks get the new PID when the new generation is running (and
    ready, with ``--ready``), a :class:`~envwrap.process.supervisor.Rejected` when it
    failed and was rolled back, or None when superseded or stopping.
    """

    def replace(
        self, environment: dict[str, str], done: Callable[[object], None] | None = None
    ) -> None: ...

    def handoff(
        self, environment: dict[str, str], done: Callable[[object], None] | None = None
    ) -> None: ...

    def send(self, signum: int) -> None: ...

    def request_exit(self, code: int) -> None: ...


#: the first retry of a change the program rejected; it doubles, up to --interval
RETRY_FIRST = 30.0


class ProgramPid:
    """The PID of the generation that runs, for messages: an events sink
    (:func:`envwrap.telemetry.events.add_sink`) of the supervisor's ``start``
    events, told the rest by the policy. ``announce`` is said, with the old and
    the new PID, when the next generation of a rotation starts."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self._announce: str | None = None

    def handle(self, event: str, fields: Mapping[str, object]) -> None:
        pid = fields.get("pid")
        if event != "start" or not isinstance(pid, int):
            return
        reason = fields.get("reason")
        if reason == "rotation" and self._announce is not None:
            log.notice(f"{self._announce}, pid {self.pid} -> {pid}")
            self._announce = None
            self.pid = pid
        elif reason in ("initial", "rollback"):
            self.pid = pid

    def announce(self, text: str) -> None:
        """Say ``text`` once the next rotation's generation starts (``restart``)."""
        self._announce = text


class _Change:
    """An environment the stores want the program to run on."""

    __slots__ = ("composed", "detail", "environment")

    def __init__(self, environment: dict[str, str], composed: Composed, detail: str) -> None:
        self.environment = environment
        self.composed = composed
        self.detail = detail


class RotationPolicy:
    """The one owner of what the running generation runs on (``--watch``).

    The watcher reports every change (:meth:`__call__`, on its thread); the
    supervisor reports verdicts (on its main thread); the ``--restart-limit``
    gate and the retry run on timer threads: one lock orders them. A change is
    the *desired* state; it is applied when nothing holds it -- the
    ``--restart-limit`` window (:class:`~envwrap.restart_limit.RestartWindow`,
    a gate this policy asks) -- and only if it still differs from what runs (or
    from the generation on probation). So a change the store takes back while
    it is held is never applied, and what the log, the audit log and the
    observers report is what runs.

    With ``--on-change handoff``, or ``restart`` with ``--ready``, a change
    counts once the new generation is ready. One that fails is rolled back by
    the supervisor; the policy records it and tries the same environment again
    after :data:`RETRY_FIRST` seconds (doubling, capped at ``--interval``), or
    at once when the store changes again. ``--render`` files get the new values
    before the new generation starts, the running ones back on a rollback.
    Observers (cache, lease revoker) are told on their own thread.
    """

    def __init__(
        self,
        settings: Settings,
        child_env: dict[str, str],
        child: ChildControl,
        on_values: Callable[[list[str]], None] | None = None,
        *,
        retry_first: float = RETRY_FIRST,
        composed: Composed | None = None,
        gate: RestartWindow | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        from envwrap.environment import Composed as _Composed

        self.settings = settings
        self.child = child
        self.on_values = on_values
        self.retry_first = retry_first
        self.gate = gate
        first = composed if composed is not None else _Composed(dict(child_env), [], [])
        #: what the running generation runs on: the one home of that fact
        self._running = _Change(child_env, first, "")
        #: what observers were last told runs
        self._told = first
        #: the latest change not yet handed to the supervisor (held by the gate)
        self._desired: _Change | None = None
        #: the change handed to the supervisor, on probation until its verdict
        self._trying: _Change | None = None
        self._lock = threading.RLock()
        self._attempt = 0  # numbers the changes handed to the supervisor
        self._backoff = Backoff(first=retry_first, cap=settings.interval, jitter=False)
        self._timer: threading.Timer | None = None
        self._gate_timer: threading.Timer | None = None
        self._observers = Observers(observers)
        #: --wait: a burst of changes is considered once, with its last state
        self._quiet = QuietTimer(settings.wait, self._consider)
        #: the running generation's PID, for messages (fed by the supervisor's events)
        self.program = ProgramPid()

    @property
    def current(self) -> dict[str, str]:
        """The environment of the running program."""
        return self._running.environment

    @property
    def current_composed(self) -> Composed:
        """The values the running program was composed from."""
        return self._running.composed

    @property
    def held(self) -> bool:
        """Whether a change waits for the ``--restart-limit`` window."""
        return self._desired is not None

    @property
    def verified(self) -> bool:
        """Whether a change waits for the new generation to be ready before it counts."""
        action = self.settings.on_change
        return action == "handoff" or (action == "restart" and bool(self.settings.ready))

    def __call__(self, composed: Composed, changed: set[Locator]) -> None:
        """The watcher saw a change: ``composed`` is what the stores hold now. It is
        considered once things are quiet (``--wait``)."""
        self._quiet.offer(composed, changed)

    def _consider(self, composed: Composed, changed: set[Locator]) -> None:
        """The last change of a quiet burst: apply it, hold it, or drop it."""
        environment = child_environment(composed.environment, self.settings.pass_env,
                                        self.settings.scrub_env)
        change = _Change(environment, composed, _names(changed))
        with self._lock:
            self._cancel_retry()
            self._backoff.reset()
            target = self._trying or self._running
            if environment == target.environment:
                self._drop_held("the change was undone while held")
                if self._trying is not None:
                    self._trying = change  # the same values, newer versions
                    return
                log.info("a secret changed, but not what the program sees; nothing to do")
                audit.record("rotation", outcome="unchanged", detail=change.detail)
                self._running = change
                self._tell()
                return
            try:
                launch.check_exec_limits(environment, self.settings.argv)
            except EnvwrapError as err:
                self._drop_held("the stores hold values that cannot be applied")
                log.error("cannot apply the new secrets; the program keeps the current ones: "
                          f"{err}")
                audit.record("rotation", outcome="failed", detail=str(err))
                return
            self._desired = change
            self._advance()

    # -- applying ---------------------------------------------------------------------

    def _gated(self) -> bool:
        return self.gate is not None and self.settings.on_change in ("restart", "handoff")

    def _advance(self, released: bool = False) -> None:
        """Apply the desired change if the gate allows it now; else hold it (locked)."""
        change = self._desired
        if change is None:
            return
        if self._gated():
            assert self.gate is not None
            delay = self.gate.delay()
            if delay > 0:
                if self._gate_timer is None:
                    self._hold(delay)
                return
            self.gate.record()
        self._desired = None
        if self._gate_timer is not None:
            self._gate_timer.cancel()
            self._gate_timer = None
            released = True
        if released:
            log.info("applying the held change (--restart-limit)")
            audit.record("hold", outcome="released")
        self._start(change)

    def _hold(self, delay: float) -> None:
        assert self.gate is not None
        timer = threading.Timer(delay, self._gate_opens)
        timer.daemon = True
        timer.name = "envwrap-restart-limit"
        self._gate_timer = timer
        timer.start()
        until = time.strftime("%H:%M:%SZ", time.gmtime(time.time() + delay))
        detail = hold_detail(self.gate, until)
        held = self._desired.environment if self._desired is not None else {}
        names = ", ".join(changed_variables(self._running.environment, held)) or "none"
        log.warning(f"restart held by --restart-limit: {detail}; changed variables: {names}")
        audit.record("hold", outcome="held", detail=detail)

    def _gate_opens(self) -> None:
        with self._lock:
            if self._gate_timer is None:
                return  # cancelled meanwhile
            self._gate_timer = None
            change = self._desired
            if change is None:
                return
            if self.gate is not None and self.gate.delay() > 0:  # fired a little early
                self._hold(self.gate.delay())
                return
            target = self._trying or self._running
            if change.environment == target.environment:
                self._desired = None
                log.info("held restart cancelled: the change was undone while held")
                audit.record("hold", outcome="released", detail="the change was undone while held")
                return
            self._advance(released=True)

    def _drop_held(self, why: str) -> None:
        if self._desired is None:
            return
        self._desired = None
        if self._gate_timer is not None:
            self._gate_timer.cancel()
            self._gate_timer = None
        log.info(f"held restart cancelled: {why}")
        audit.record("hold", outcome="released", detail=why)

    def _start(self, change: _Change) -> None:
        """Render, then start the generation of ``change`` (or signal, or exit) (locked)."""
        if not self._render(change.composed, failing="rotation"):
            return
        if self.on_values is not None:
            self.on_values(change.composed.secret_values)
        action = self.settings.on_change
        applied = _applied(self._running.environment, change.environment)
        if self.verified:
            self._attempt += 1
            attempt = self._attempt
            self._trying = change
            before = self.program.pid

            def settled(outcome: object) -> None:
                self._settled(attempt, change, outcome, f"{applied}; {_DONE[action]}, "
                              f"pid {before} -> {outcome}")

            if action == "handoff":
                log.info("secrets changed; starting a new generation next to the current one")
                self.child.handoff(change.environment, settled)
            else:
                log.info("secrets changed; restarting the program")
                audit.record("restart", outcome="ok")
                self.child.replace(change.environment, settled)
            return
        self._trying = None
        self._running = change
        audit.record("rotation", outcome="applied", detail=change.detail)
        if action == "signal":
            log.notice(f"{applied}; signalled the program "
                       f"({signal_name(self.settings.reload_signal)}), pid {self.program.pid}")
            log.info("secrets changed; signalling the program", signal=self.settings.reload_signal)
            self.child.send(self.settings.reload_signal)
            audit.record("signal", signal=self.settings.reload_signal, outcome="ok")
            self._tell()
        elif action == "exit":
            log.notice(f"{applied}; exiting with {EXIT_ON_CHANGE} to be started again")
            log.info(f"secrets changed; exiting with {EXIT_ON_CHANGE} (--on-change exit)")
            audit.record("exit", outcome="ok", detail=f"exit code {EXIT_ON_CHANGE}")
            self.child.request_exit(EXIT_ON_CHANGE)
            self._tell()
        else:
            log.info("secrets changed; restarting the program")
            audit.record("restart", outcome="ok")
            self.program.announce(f"{applied}; {_DONE[action]}")
            # observers hear of it once the new generation runs (the old one stopped)
            self.child.replace(change.environment,
                               self._restarted if self._observers.observers else None)

    def _restarted(self, outcome: object) -> None:
        from envwrap.process.supervisor import Rejected

        if outcome is not None and not isinstance(outcome, Rejected):
            with self._lock:
                self._tell()

    def _tell(self) -> None:
        """Hand the observers what runs now, if it changed (locked)."""
        running, stopped = self._running.composed, self._told
        if running is not stopped:
            self._told = running
            self._observers.tell(lambda observer: observer.generation_changed(running, stopped))

    def round_done(self, failed: bool, secrets: SecretEnvironment,
                   fetched: Mapping[Locator, Fetched]) -> None:
        """The watcher's report after each poll round (its thread): observers compare
        what the stores hold with what runs, on their own thread."""
        if failed or not self._observers.follow_rounds:
            return
        live = {loc: fetched[loc] for loc in secrets.locators() if loc in fetched}
        with self._lock:
            running = self._running.composed
        self._observers.tell(lambda observer: observer.round_done(running, secrets, live))

    def access_refused(self, locator: Locator, error: EnvwrapError) -> None:
        """The watcher's report that a store refused a secret (its thread): observers
        hear it on their thread, after everything they were told before."""
        self._observers.tell(lambda observer: observer.access_refused(locator, error))

    def _settled(self, attempt: int, change: _Change, outcome: object, applied: str) -> None:
        """The supervisor's verdict on change number ``attempt`` (main thread)."""
        from envwrap.process.supervisor import Rejected

        with self._lock:
            if attempt != self._attempt or outcome is None:
                return  # superseded by a newer change, or envwrap is stopping
            if self._trying is not None and self._trying.environment == change.environment:
                change = self._trying  # the same values, perhaps newer versions
            self._trying = None
            if not isinstance(outcome, Rejected):
                same = change.environment == self._running.environment
                if not same and isinstance(outcome, int):
                    self.program.pid = outcome
                    log.notice(applied)
                self._running = change
                self._backoff.reset()
                audit.record("rotation", outcome="unchanged" if same else "applied",
                             detail=change.detail)
                log.info("the new secrets are in use", pid=outcome)
                self._tell()
                return
            names = ", ".join(changed_variables(self._running.environment,
                                                change.environment)) or "none"
            delay = self._backoff.next_delay()
            what = ("the new generation could not run beside the current one"
                    if outcome.address_conflict else "the program failed with the new secrets")
            log.error(
                f"{what} ({outcome.why}); rolled back to "
                f"the previous ones; changed variables: {names}; retrying in {delay:g}s"
            )
            audit.record("rotation", outcome="rolled_back",
                         detail=f"{outcome.why}; changed variables: {names}")
            if not self._render(self._running.composed):
                log.error("the --render files keep the rejected values")
            self._schedule_retry(attempt, change.environment, change.detail, change.composed,
                                 delay)

    def _render(self, composed: Composed, failing: str = "render") -> bool:
        """Write the --render files; False (logged, audited) if they cannot be written."""
        try:
            render_files(self.settings, composed)
        except EnvwrapError as err:
            if failing == "rotation":
                log.error(f"cannot apply the new secrets; the program keeps the current ones: "
                          f"{err}")
                audit.record("rotation", outcome="failed", detail=str(err))
            else:
                log.error(f"cannot write the --render files: {err}")
                audit.record("render", outcome=audit.outcome_of(err.exit_code), detail=str(err))
            return False
        return True

    def _schedule_retry(self, attempt: int, environment: dict[str, str], detail: str,
                        composed: Composed, delay: float) -> None:
        change = _Change(environment, composed, detail)

        def retry() -> None:
            with self._lock:
                if attempt != self._attempt or self._timer is None:
                    return
                self._timer = None
                log.info("trying the rolled-back secrets again")
                if self._desired is None:
                    self._desired = change
                self._advance()

        timer = threading.Timer(delay, retry)
        timer.daemon = True
        timer.name = "envwrap-retry"
        self._timer = timer
        timer.start()

    def _cancel_retry(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        """Cancel a pending retry and a held change; let the observers finish (stopping)."""
        self._quiet.cancel()
        with self._lock:
            self._attempt += 1
            self._cancel_retry()
            self._desired = None
            if self._gate_timer is not None:
                self._gate_timer.cancel()
                self._gate_timer = None
        self._observers.close()


def hold_detail(gate: RestartWindow, until: str) -> str:
    return (f"{gate.limit} restarts in {gate.window:g}s reached; "
            f"the change waits until {until}")


def changed_variables(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The names whose values differ (added and removed ones included); never values."""
    return sorted(name for name in before.keys() | after.keys()
                  if before.get(name) != after.get(name))


#: what a rotation did, by --on-change, for the line that says so
_DONE = {"restart": "restarted the program", "handoff": "handed off to a new generation"}


def _applied(before: dict[str, str], after: dict[str, str]) -> str:
    """The start of the line that says a rotation was applied: names, never values."""
    names = ", ".join(changed_variables(before, after)) or "no variable"
    return f"rotation applied: {names} changed"


def _names(changed: set[Locator]) -> str:
    return ", ".join(sorted(str(loc) for loc in changed))
