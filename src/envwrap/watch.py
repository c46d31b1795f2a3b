"""Change detection for ``--watch`` and the sidecar (docs/rotation.md).

A :class:`Watcher` owns one thread. Each round it asks every store, as cheaply
as the store allows, whether a secret changed (``probe_many``: a version id
without the value, or the secret itself where reading it costs the store no
more, as with Vault KV v2), reads only what changed (or what has no version id,
to compare content) -- one read per changed secret at most, whose version
becomes the one watched -- and reports the newly composed environment to its ``on_change``
callback. Files whose change may change a secret (``Backend.watch_paths``) and
``.env`` files are also followed through file-system events
(:mod:`envwrap.watch_files`), with the poll as a safety net; leases and store
logins are kept alive by :mod:`envwrap.watch_leases`.

The watcher only detects and reports. When a change is applied -- ``--wait``,
``--restart-limit``, whether it differs from what runs -- is the callback's
decision (:class:`envwrap.rotation.RotationPolicy`). ``--splay D`` is the
watcher's, because it spreads the store's load: a version change is read after
a random wait up to D, polling goes on meanwhile, and what changes during the
wait is read by the same, single, read (a change a probe read along is reported
after the wait, folded in with what the wait's polls see).

A store that fails never yields an empty or partial environment: the watcher
keeps the last good values, retries with backoff and jitter, logs names (never
values), and reports the change once the store is back. A change that cannot be
composed (a key gone from the new version) is logged and audited as a failed
rotation, and the program keeps its values until a good version arrives.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping

from envwrap import log
from envwrap.backends import BackendRegistry, Fetched
from envwrap.backends.contract import revision_of
from envwrap.environment import Composed, SecretEnvironment
from envwrap.errors import EnvwrapError
from envwrap.refs import Locator
from envwrap.telemetry import audit
from envwrap.values import Backoff
from envwrap.watch_files import FileEvents
from envwrap.watch_leases import Upkeep

__all__ = ["AUDIT_HEARTBEAT", "Watcher", "build_watcher"]

JITTER = 0.1
#: a secret without a version id (a file, KV v1) is re-read at every poll; its
#: ``access`` audit record is written when the content changed, and at most this
#: often otherwise, as a heartbeat
AUDIT_HEARTBEAT = 3600.0

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envwrap.config import Settings
    from envwrap.environment import Resolved

OnChange = Callable[[Composed, set[Locator]], None]
#: after each poll round: whether a store failed, the secrets, what the stores hold
OnRound = Callable[[bool, SecretEnvironment, dict[Locator, Fetched]], None]
#: a store answered that a secret cannot be read (not retryable: denied, not found)
OnRefused = Callable[[Locator, EnvwrapError], None]


class Watcher:
    """Watch every secret of one environment; see the module docstring."""

    def __init__(
        self,
        secrets: SecretEnvironment,
        registry: BackendRegistry,
        fetched: dict[Locator, Fetched],
        on_change: OnChange,
        *,
        interval: float,
        splay: float = 0.0,
        reload: Callable[[], SecretEnvironment] | None = None,
        dotenv_paths: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        on_round: OnRound | None = None,
        first_poll: float | None = None,
        on_refused: OnRefused | None = None,
    ) -> None:
        self.secrets = secrets
        self.registry = registry
        #: what the stores held at the last look: the version watched is its version
        self.fetched = dict(fetched)
        self.on_change = on_change
        self.interval = interval
        self.splay = splay
        self.reload = reload
        self.dotenv_paths = tuple(os.path.abspath(p) for p in dotenv_paths)
        self.clock = clock
        #: seconds before the first poll (None: one jittered --interval)
        self.first_poll = first_poll
        #: told after each poll round whether a store failed, and what they hold
        self.on_round = on_round
        #: told when a store refuses a secret (each time the answer changes to that)
        self.on_refused = on_refused
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._events = FileEvents(self._wake.set, self.dotenv_paths)
        self._upkeep = Upkeep(registry, clock, interval)
        self._upkeep.schedule(self.fetched)
        #: a new version was seen: read when the --splay wait ends
        self._to_read: set[Locator] = set()
        #: read, and its content changed: report when the --splay wait ends
        self._to_report: set[Locator] = set()
        #: when the --splay wait of the changes above ends (None: nothing waits)
        self._splay_until: float | None = None
        self._dotenv_seen = self._dotenv_snapshot()
        #: when an ``access`` record was last written for a version-less secret
        self._audited: dict[Locator, float] = dict.fromkeys(fetched, clock())
        self._thread: threading.Thread | None = None
        self._backoff: Backoff | None = None
        #: the secrets whose last look failed, with the exit code of that failure
        self._failing: dict[Locator, int] = {}

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        if self._events.start(self._watch_paths()):
            # a file may have changed between the first read and the watch set-up
            self._events.changed(files=True)
        self._thread = threading.Thread(target=self._run, name="envwrap-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._events.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        """Whether the watcher's thread runs (``/healthz``)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        first = self._jittered(self.interval) if self.first_poll is None else self.first_poll
        next_poll = self.clock() + first
        while not self._stopping.is_set():
            splay = self._splay_until if self._splay_until is not None else next_poll
            wake_at = min(next_poll, self._upkeep.next_deadline(), splay)
            self._wake.wait(max(0.0, wake_at - self.clock()))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                if self._events.pending:
                    files, dotenv = self._events.take()
                    self.check_files(files=files, dotenv=dotenv)
                if self.clock() >= next_poll:
                    # the interval runs from the start of a round, so that a slow
                    # round (many secrets, a slow link) does not stretch it
                    round_start = self.clock()
                    failed = self.check_once()
                    if self.on_round is not None:
                        self.on_round(failed, self.secrets, self.fetched)
                    next_poll = max(self.clock(), round_start + self._next_interval(failed))
                self._renew_due()
                read = self._report_due()
                every = set(self.secrets.locators())
                if read and read >= every and not self._failing.keys() & read:
                    # a read of every secret after --splay is a poll: what it read is
                    # the latest, so the next probe waits a whole interval from it
                    next_poll = max(next_poll, self.clock() + self._jittered(self.interval))
            except Exception as exc:  # the watcher must outlive any bug in one round
                log.error(f"watch round failed ({type(exc).__name__}); keeping current values")

    def _jittered(self, seconds: float) -> float:
        return seconds * random.uniform(1 - JITTER, 1 + JITTER)

    def _next_interval(self, failed: bool) -> float:
        if not failed:
            self._backoff = None
            return self._jittered(self.interval)
        if self._backoff is None:
            self._backoff = Backoff(first=min(1.0, self.interval), cap=self.interval)
        return self._backoff.next_delay()

    # -- one round ----------------------------------------------------------

    def check_once(self) -> bool:
        """Probe every secret, read what changed, report it; ``True`` if a store failed."""
        to_read: list[Locator] = []
        probed: dict[Locator, Fetched] = {}
        failed = False
        started = time.monotonic()
        for locator, outcome in self.registry.probe_many(self.secrets.locators()).items():
            if isinstance(outcome, EnvwrapError):
                failed |= self._failed(locator, outcome)
                continue
            if outcome is None and not self._leased(locator):
                to_read.append(locator)  # no version id: read and compare
                continue
            # a dynamic secret (no version) is not re-read to compare: every read
            # makes new credentials; its lease schedule renews it, or re-reads it
            self._recovered(locator)
            current = self.fetched.get(locator)
            unchanged = current is not None and revision_of(outcome) == current.revision
            if outcome is None or unchanged:
                continue
            if isinstance(outcome, Fetched):
                probed[locator] = outcome  # the probe read it: no second request
            else:
                self._read_later(locator)  # read once, after --splay
        if probed:
            self._report_later(self._take(probed, time.monotonic() - started))
        if to_read:
            self._report_later(self._read(to_read))
            failed |= bool(self._failing.keys() & set(to_read))
        self._report_due()
        return failed

    def check_files(self, *, files: bool = True, dotenv: bool = False) -> None:
        """After a file-system event: re-read the secrets backed by files (no store
        request), and reload the sources if a ``.env`` file changed."""
        self._events.rearm()
        if dotenv:
            seen = self._dotenv_snapshot()
            if seen != self._dotenv_seen:
                self._dotenv_seen = seen
                self._reload_sources()
        if files:
            backed = [loc for loc in self.secrets.locators()
                      if self.registry.get(loc.scheme).watch_paths(loc)]
            if backed:
                self._report_later(self._read(backed))
        self._report_due()

    def _watch_paths(self) -> list[str]:
        return [path for loc in self.secrets.locators()
                for path in self.registry.get(loc.scheme).watch_paths(loc)]

    def _read_later(self, locator: Locator) -> None:
        """A new version: read it when --splay's wait ends (joining a wait that runs)."""
        self._to_read.add(locator)
        self._splay()

    def _report_later(self, changed: set[Locator]) -> None:
        """Read, and changed: report it when --splay's wait ends (joining a wait that runs)."""
        self._to_report |= changed
        self._splay()

    def _splay(self) -> None:
        if self._splay_until is None and (self._to_read or self._to_report):
            delay = random.uniform(0, self.splay) if self.splay > 0 else 0.0
            if delay > 0:
                log.info(f"secret changed; reading it in {delay:.1f}s (--splay)")
            self._splay_until = self.clock() + delay

    def _report_due(self) -> set[Locator]:
        """Read and report the changes whose --splay wait has ended; what was read."""
        if self._splay_until is None or self.clock() < self._splay_until:
            return set()
        self._splay_until = None
        to_read, self._to_read = list(self._to_read), set()
        changed, self._to_report = self._to_report, set()
        if to_read:
            changed |= self._read(to_read)
        if changed:
            self._compose_and_notify(changed)
        return set(to_read)

    def _dotenv_snapshot(self) -> tuple[bytes | None, ...]:
        contents: list[bytes | None] = []
        for path in self.dotenv_paths:
            try:
                with open(path, "rb") as handle:
                    contents.append(handle.read())
            except OSError:
                contents.append(None)
        return tuple(contents)

    def _leased(self, locator: Locator) -> bool:
        current = self.fetched.get(locator)
        return current is not None and current.lease is not None and current.lease.duration > 0

    def _read(self, locators: list[Locator]) -> set[Locator]:
        """Read ``locators``; those whose content changed. What is read is watched."""
        started = time.monotonic()
        outcomes = self.registry.read_many(locators)
        return self._take(outcomes, time.monotonic() - started)

    def _take(
        self, outcomes: Mapping[Locator, Fetched | EnvwrapError], elapsed: float
    ) -> set[Locator]:
        """Watch what was read (a read, or a probe that read); those whose content changed."""
        changed: set[Locator] = set()
        read = {loc: o for loc, o in outcomes.items() if isinstance(o, Fetched)}
        audit.record_reads(self.secrets.uses(), self._worth_auditing(read), elapsed)
        for locator, outcome in outcomes.items():
            if isinstance(outcome, EnvwrapError):
                self._failed(locator, outcome)
                continue
            self._recovered(locator)
            previous = self.fetched.get(locator)
            if previous is None or not previous.same_content(outcome):
                changed.add(locator)
            self.fetched[locator] = outcome
            self._upkeep.schedule({locator: outcome})
        return changed

    def _worth_auditing(self, read: dict[Locator, Fetched]) -> dict[Locator, Fetched]:
        """Reads that get an ``access`` record: a versioned secret is read only when
        its version changed; one without a version id is re-read every poll, and
        recorded only when its content changed, or once per :data:`AUDIT_HEARTBEAT`."""
        now = self.clock()
        kept = {}
        for locator, outcome in read.items():
            previous = self.fetched.get(locator)
            if (
                outcome.version is not None
                or previous is None
                or not previous.same_content(outcome)
                or now - self._audited.get(locator, float("-inf")) >= AUDIT_HEARTBEAT
            ):
                kept[locator] = outcome
                self._audited[locator] = now
        return kept

    def _failed(self, locator: Locator, error: EnvwrapError) -> bool:
        # every failed attempt is an event (metrics count them); the audit
        # log and the warning below say it once per outage
        audit.record("check", store=locator.scheme, path=locator.path_with_query,
                     outcome=audit.outcome_of(error.exit_code))
        variable, reference = self.secrets.describe(locator)
        # once per outage, and again when the answer changes: a denial after a run of
        # 5xx is news (the store is back, and says no)
        if self._failing.get(locator) != error.exit_code:
            self._failing[locator] = error.exit_code
            what = "unreachable" if error.retryable else "cannot be read"
            audit.record(
                "access",
                variable=variable,
                reference=reference,
                outcome=audit.outcome_of(error.exit_code),
                detail=error.message,
            )
            log.warning(
                f"store {what}; the program keeps its current values",
                variable=variable,
                reference=reference,
                error=error.message,
            )
            if not error.retryable and self.on_refused is not None:
                self.on_refused(locator, error)
        return True

    def _recovered(self, locator: Locator) -> None:
        audit.record("check", store=locator.scheme, path=locator.path_with_query, outcome="ok")
        if self._failing.pop(locator, None) is not None:
            variable, reference = self.secrets.describe(locator)
            log.info("store reachable again", variable=variable, reference=reference)

    def _compose_and_notify(self, changed: set[Locator]) -> None:
        try:
            composed = self.secrets.compose(self.fetched)
        except EnvwrapError as err:
            # the program keeps running on its values; /readyz says so until a
            # version that can be used arrives (the failed record)
            log.warning(f"the new secret values cannot be used; keeping the current ones: {err}")
            audit.record("rotation", outcome="failed", detail=str(err))
            return
        for locator in changed:
            variable, reference = self.secrets.describe(locator)
            log.info(
                "secret changed",
                variable=variable,
                reference=reference,
                version=self.fetched[locator].version,
            )
        self.on_change(composed, changed)

    def _reload_sources(self) -> None:
        """A ``.env`` file changed: load the sources again, read new references, report."""
        if self.reload is None:
            return
        try:
            secrets = self.reload()
            missing = [loc for loc in secrets.locators() if loc not in self.fetched]
            if missing:
                from envwrap.resolve import fetch_all

                started = time.monotonic()
                fetched = fetch_all(
                    missing, self.registry, timeout=self.interval, describe=secrets.describe
                )
                audit.record_reads(secrets.uses(), fetched, time.monotonic() - started)
                self.fetched.update(fetched)
                self._upkeep.schedule(fetched)
        except EnvwrapError as err:
            log.warning(f"the changed .env cannot be used; keeping the current values: {err}")
            return
        self.secrets = secrets
        self._events.start(self._watch_paths())
        log.info(".env changed")
        audit.record_sources(secrets.uses(), self.fetched, self.dotenv_paths)
        still_used = set(secrets.locators())
        self._to_read &= still_used
        self._to_report &= still_used
        self._compose_and_notify(set())

    # -- leases and the store token ------------------------------------------

    def _renew_due(self) -> None:
        for locator in self._upkeep.run_due(self.fetched):
            # not renewable, or near its maximum TTL: read again (new credentials)
            self._report_later(self._read([locator]))
            if locator in self._failing:
                self._upkeep.retry_read(locator)


def build_watcher(
    settings: Settings,
    resolved: Resolved,
    on_change: OnChange,
    *,
    on_round: OnRound | None = None,
    first_poll: float | None = None,
    on_refused: OnRefused | None = None,
) -> Watcher:
    """A watcher of every secret and ``.env`` file of ``resolved`` (not started)."""
    from envwrap import sources

    environ = resolved.environ
    return Watcher(
        resolved.secrets,
        resolved.registry or BackendRegistry(resolved.secrets.base),
        resolved.fetched,
        on_change,
        interval=settings.interval,
        splay=settings.splay,
        reload=lambda: SecretEnvironment.load(settings, environ),
        dotenv_paths=tuple(sources.dotenv_files(
            settings.env_file, disabled=settings.no_env_file, folder=settings.start_folder,
            missing=True,
        )),
        on_round=on_round,
        first_poll=first_poll,
        on_refused=on_refused,
    )
