"""What a rotation does (DESIGN §4): re-render ``--render`` files, then restart
the program, signal it, or exit -- only when what the program sees differs.

This is the seam between the watcher (which knows stores) and the supervisor
(which knows processes); neither knows the other.
"""

from __future__ import annotations

from typing import Protocol

from envwrap import log
from envwrap.environment import child_environment
from envwrap.errors import EnvwrapError
from envwrap.process import launch
from envwrap.render import render_files
from envwrap.telemetry import audit
from envwrap.watch import build_watcher

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from envwrap.backends import Fetched
    from envwrap.config import Settings
    from envwrap.environment import Composed, Resolved
    from envwrap.refs import Locator
    from envwrap.restart_limit import LimitedRestarts
    from envwrap.revoke import LeaseRevoker
    from envwrap.watch import Watcher

__all__ = [
    "EXIT_ON_CHANGE",
    "ChildControl",
    "RotationHandler",
    "changed_variables",
    "start_watching",
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


#: the first retry of a change the program rejected (DESIGN §9); it doubles, up to --interval
RETRY_FIRST = 30.0


class RotationHandler:
    """The watcher's ``on_change`` for ``envwrap --watch``.

    Called on the watcher's thread; the supervisor reports how a new generation
    fared on its main thread; retries run on a timer thread: one lock orders them.
    With ``--on-change handoff``, or ``restart`` with ``--ready``, a change counts
    as applied once the new generation is ready. One that fails is rolled back by
    the supervisor; this handler records it and tries the same environment
    again after :data:`RETRY_FIRST` seconds (doubling, capped at ``--interval``),
    or at once when the store changes again. ``--render`` files follow: they get
    the new values before the new generation starts, the previous ones back on
    a rollback (``composed``: what the running program was started with).
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
    ) -> None:
        import threading

        self.settings = settings
        #: the environment of the running program (the last one applied)
        self.current = child_env
        #: the values behind it, for --render files to go back to on a rollback
        self.current_composed = composed
        self.child = child
        self.on_values = on_values
        self.retry_first = retry_first
        self._lock = threading.RLock()
        self._attempt = 0  # numbers the changes handed to the supervisor
        self._failures = 0
        self._timer: threading.Timer | None = None
        #: how a rotation starts the next generation: (environment, done, by handoff);
        #: start_watching routes it through --restart-limit and --revoke-on-exit
        self.start_generation: Callable[
            [dict[str, str], Callable[[object], None] | None, bool], None
        ] = lambda environment, done, handoff: start_generation(
            child, environment, done, handoff
        )
        self.limiter: LimitedRestarts | None = None

    @property
    def verified(self) -> bool:
        """Whether a change waits for the new generation to be ready before it counts."""
        action = self.settings.on_change
        return action == "handoff" or (action == "restart" and bool(self.settings.ready))

    def __call__(self, composed: Composed, changed: set[Locator]) -> None:
        environment = child_environment(composed.environment, self.settings.pass_env)
        with self._lock:
            self._cancel_retry()
            self._failures = 0
            if environment == self.current:
                self._attempt += 1  # a change still in flight is superseded
                log.info("a secret changed, but not what the program sees; nothing to do")
                audit.record("rotation", outcome="unchanged", detail=_names(changed))
                return
        try:
            launch.check_exec_limits(environment, self.settings.argv)
            render_files(self.settings, composed)
        except EnvwrapError as err:
            log.error(f"cannot apply the new secrets; the program keeps the current ones: {err}")
            audit.record("rotation", outcome="failed", detail=str(err))
            return
        if self.on_values is not None:
            self.on_values(composed.secret_values)
        self._apply(environment, _names(changed), composed)

    def _apply(self, environment: dict[str, str], detail: str, composed: Composed) -> None:
        action = self.settings.on_change
        with self._lock:
            if self.verified:
                self._attempt += 1
                attempt = self._attempt

                def done(outcome: object) -> None:
                    self._settled(attempt, environment, detail, composed, outcome)

                if action == "handoff":
                    log.info("secrets changed; starting a new generation next to the current one")
                else:
                    log.info("secrets changed; restarting the program")
                self.start_generation(environment, done, action == "handoff")
                return
            self.current = environment
            self.current_composed = composed
        audit.record("rotation", outcome="applied", detail=detail)
        self._keep_in_cache(composed)
        if action == "signal":
            log.info("secrets changed; signalling the program", signal=self.settings.reload_signal)
            self.child.send(self.settings.reload_signal)
            audit.record("signal", signal=self.settings.reload_signal, outcome="ok")
        elif action == "exit":
            log.info(f"secrets changed; exiting with {EXIT_ON_CHANGE} (--on-change exit)")
            audit.record("exit", outcome="ok", detail=f"exit code {EXIT_ON_CHANGE}")
            self.child.request_exit(EXIT_ON_CHANGE)
        else:
            log.info("secrets changed; restarting the program")
            self.start_generation(environment, None, False)

    def _settled(self, attempt: int, environment: dict[str, str], detail: str,
                 composed: Composed, outcome: object) -> None:
        """The supervisor's verdict on change number ``attempt`` (main thread)."""
        from envwrap.process.supervisor import Rejected

        with self._lock:
            if attempt != self._attempt or outcome is None:
                return  # superseded by a newer change, or envwrap is stopping
            if not isinstance(outcome, Rejected):
                self.current = environment
                self.current_composed = composed
                self._failures = 0
                audit.record("rotation", outcome="applied", detail=detail)
                log.info("the new secrets are in use", pid=outcome)
                self._keep_in_cache(composed)
                return
            names = ", ".join(changed_variables(self.current, environment)) or "none"
            delay = min(self.retry_first * 2**self._failures, self.settings.interval)
            self._failures += 1
            log.error(
                f"the program failed with the new secrets ({outcome.why}); rolled back to "
                f"the previous ones; changed variables: {names}; retrying in {delay:g}s"
            )
            audit.record("rotation", outcome="rolled_back",
                         detail=f"{outcome.why}; changed variables: {names}")
            if self.current_composed is not None and not self._render(self.current_composed):
                log.error("the --render files keep the rejected values")
            self._schedule_retry(attempt, environment, detail, composed, delay)

    def _keep_in_cache(self, composed: Composed) -> None:
        """Keep the fallback cache on what the program now runs on (once a change is final)."""
        if self.settings.cache:
            from envwrap.cache import after_rotation

            after_rotation(composed)

    def _render(self, composed: Composed) -> bool:
        """Write the --render files; False (logged, audited) if they cannot be written."""
        try:
            render_files(self.settings, composed)
        except EnvwrapError as err:
            log.error(f"cannot write the --render files: {err}")
            audit.record("render", outcome=audit.outcome_of(err.exit_code), detail=str(err))
            return False
        return True

    def _schedule_retry(self, attempt: int, environment: dict[str, str], detail: str,
                        composed: Composed, delay: float) -> None:
        import threading

        def retry() -> None:
            with self._lock:
                if attempt != self._attempt:
                    return
                self._timer = None
            log.info("trying the rolled-back secrets again")
            if self._render(composed):
                self._apply(environment, detail, composed)

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
        """Cancel a pending retry (envwrap is stopping)."""
        with self._lock:
            self._attempt += 1
            self._cancel_retry()


def start_generation(
    child: ChildControl,
    environment: dict[str, str],
    done: Callable[[object], None] | None,
    handoff: bool,
) -> None:
    """Start the next generation: beside the current one (handoff) or in its place."""
    if handoff:
        child.handoff(environment, done)
    else:
        audit.record("restart", outcome="ok")
        child.replace(environment, done)


def changed_variables(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The names whose values differ (added and removed ones included); never values."""
    return sorted(name for name in before.keys() | after.keys()
                  if before.get(name) != after.get(name))


def _names(changed: set[Locator]) -> str:
    return ", ".join(sorted(str(loc) for loc in changed))


def start_watching(
    settings: Settings,
    resolved: Resolved,
    child_env: dict[str, str],
    child: ChildControl,
    *,
    on_values: Callable[[list[str]], None] | None = None,
    revoker: LeaseRevoker | None = None,
) -> tuple[Watcher, RotationHandler] | None:
    """Start the watcher thread of ``envwrap --watch``; ``None`` when nothing can change."""
    handler = RotationHandler(settings, child_env, child, on_values, composed=resolved.composed)
    watcher = build_watcher(settings, resolved, handler)
    if not resolved.secrets.has_references and not watcher.dotenv_paths:
        log.info("nothing to watch: no references and no .env file")
        return None
    _plug_restarts(settings, handler, watcher, child_env, revoker)
    if settings.cache:
        from envwrap.cache import follow

        follow(watcher)
    watcher.start()
    return watcher, handler


def _plug_restarts(
    settings: Settings,
    handler: RotationHandler,
    watcher: Watcher,
    child_env: dict[str, str],
    revoker: LeaseRevoker | None,
) -> None:
    """``--restart-limit`` and ``--revoke-on-exit``'s part in a restart."""
    child = handler.child
    if settings.restart_limit is None and revoker is None:
        return

    def perform(environment: dict[str, str], token: object) -> None:
        """Start the generation of ``environment``; ``token`` is (what it is made of,
        the handler's callback or None, whether by handoff)."""
        assert isinstance(token, tuple)
        used, done, handoff = token

        def settled(outcome: object) -> None:
            if done is not None:
                done(outcome)
            from envwrap.process.supervisor import Rejected

            # the stopped generation's leases, once the new one runs (never after a
            # rollback: the previous generation keeps serving with them)
            if revoker is not None and outcome is not None and not isinstance(outcome, Rejected):
                import threading

                # on the supervisor's thread: revoke (network calls) elsewhere
                threading.Thread(target=revoker.generation, args=(used,),
                                 name="envwrap-revoke", daemon=True).start()

        start_generation(child, environment, settled, handoff)

    def snapshot() -> dict[Locator, Fetched]:
        """What the new environment is made of (on the watcher's thread, which owns it);
        the watcher keeps secrets a changed .env no longer references: not those."""
        fetched = watcher.fetched
        return {loc: fetched[loc] for loc in watcher.secrets.locators() if loc in fetched}

    request = perform
    if settings.restart_limit is not None:
        from envwrap.restart_limit import LimitedRestarts, RestartWindow

        limiter = LimitedRestarts(RestartWindow(*settings.restart_limit), perform, child_env)
        handler.limiter = limiter
        request = limiter.request
    handler.start_generation = lambda environment, done, handoff: request(
        environment, (snapshot(), done, handoff)
    )
