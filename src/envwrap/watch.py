"""Change detection for ``--watch`` and the sidecar (docs/rotation.md).

A :class:`Watcher` owns one thread. Each round it asks every store, as cheaply
as the store allows, whether a secret changed (``Backend.probe_many``: a version
id without the value), reads only what changed (or what has no version id, to
compare content), and hands the newly composed environment to its
``on_change`` callback. Files and ``.env`` files are also watched through
file-system events (watchdog) on their folders -- which is what catches the
Kubernetes ``..data`` symlink swap -- with the poll as a safety net.

Nothing is applied at once: a change waits for quiet (``--wait MIN[:MAX]``,
consul-template's quiescence, :class:`Quiescence`). Every look that finds
new content -- a poll, a file re-read after an event -- restarts the MIN timer;
when it runs out, what changed is read once more and applied only if it is
still the same, so a burst of writes, or a slow writer caught between its
truncate and its last write, is one change with the final content. MAX bounds
the wait after the first change, so a store that changes all the time is still
followed.

A store that fails never yields an empty or partial environment: the watcher
keeps the last good values, retries with backoff and jitter, logs names (never
values), and applies the change once the store is back. The watcher knows
nothing about processes; the callback does.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

from envwrap import log
from envwrap.backends import Backend, BackendRegistry, Fetched
from envwrap.environment import Composed, SecretEnvironment
from envwrap.errors import EnvwrapError
from envwrap.refs import Locator
from envwrap.telemetry import audit
from envwrap.values import Backoff

__all__ = ["Quiescence", "Watcher", "build_watcher"]

#: a lease is renewed (or its secret re-read) when this share of it has passed
LEASE_RENEW_AT = 2 / 3
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


class Quiescence:
    """When to act on changes: ``minimum`` after the last one, ``maximum`` after the first.

    Pure bookkeeping on the times it is given, so that it is tested with a
    made-up clock. ``(0, 0)`` acts at once.
    """

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self.first: float | None = None
        self.last: float | None = None

    @property
    def pending(self) -> bool:
        return self.first is not None

    def observe(self, now: float) -> None:
        """A change was seen at ``now``."""
        if self.first is None:
            self.first = now
        self.last = now

    def deadline(self) -> float | None:
        """When the pending changes are due; None when there are none."""
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.minimum, self.first + self.maximum)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def overdue(self, now: float) -> bool:
        """MAX has passed since the first change: act on what there is."""
        return self.first is not None and now >= self.first + self.maximum

    def reset(self) -> None:
        self.first = self.last = None


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
        wait: tuple[float, float] = (0.0, 0.0),
        clock: Callable[[], float] = time.monotonic,
        on_round: OnRound | None = None,
        first_poll: float | None = None,
        on_refused: OnRefused | None = None,
    ) -> None:
        self.secrets = secrets
        self.registry = registry
        self.fetched = dict(fetched)
        self.on_change = on_change
        self.interval = interval
        self.splay = splay
        self.reload = reload
        self.dotenv_paths = tuple(os.path.abspath(p) for p in dotenv_paths)
        self.clock = clock
        self.versions: dict[Locator, str | None] = {loc: f.version for loc, f in fetched.items()}
        self.quiet = Quiescence(*wait)
        #: changed since the last apply, waiting for quiet
        self._pending: set[Locator] = set()
        self._dotenv_pending = False
        self._dotenv_seen: tuple[bytes | None, ...] = ()
        #: when an ``access`` record was last written for a version-less secret
        self._audited: dict[Locator, float] = dict.fromkeys(fetched, clock())
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._files_changed = threading.Event()
        self._dotenv_changed = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: object | None = None
        #: the folders the observer watches (see _watch_targets)
        self._armed: frozenset[str] = frozenset()
        self._backoff: Backoff | None = None
        #: the secrets whose last look failed, with the exit code of that failure
        self._failing: dict[Locator, int] = {}
        self._lease_due: dict[Locator, float] = {}
        #: scheme -> when its backend's upkeep (token renewal, re-login) is due;
        #: None: never again
        self._upkeep_due: dict[str, float | None] = {}
        self._schedule_leases(self.fetched)
        #: seconds before the first poll (None: one jittered --interval)
        self.first_poll = first_poll
        #: told after each poll round whether a store failed, and what they hold
        self.on_round = on_round
        #: told when a store refuses a secret (each time the answer changes to that)
        self.on_refused = on_refused

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        if self._start_file_events():
            # a file may have changed between the first read and the watch set-up
            self._files_changed.set()
            self._wake.set()
        self._thread = threading.Thread(target=self._run, name="envwrap-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        observer = self._observer
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
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
            quiet = self.quiet.deadline()
            wake_at = min(next_poll, self._next_deadline(), next_poll if quiet is None else quiet)
            timeout = max(0.0, wake_at - self.clock())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                if self._files_changed.is_set() or self._dotenv_changed.is_set():
                    self.check_files()
                if self.clock() >= next_poll:
                    # the interval runs from the start of a round, so that a slow
                    # round (many secrets, a slow link) does not stretch it
                    round_start = self.clock()
                    failed = self.check_once()
                    if self.on_round is not None:
                        self.on_round(failed, self.secrets, self.fetched)
                    next_poll = max(self.clock(), round_start + self._next_interval(failed))
                self.settle()
                self._renew_due()
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
        """Probe every secret, read what changed, apply once quiet; ``True`` if a store failed."""
        changed, failed = self._detect(self.secrets.locators())
        self._hold(changed)
        self.settle()
        return failed

    def check_files(self) -> None:
        """Re-read file secrets (after a file-system event), and see if ``.env`` changed."""
        if self._dotenv_changed.is_set():
            self._dotenv_changed.clear()
            seen = self._dotenv_snapshot()
            if seen != self._dotenv_seen or not self._dotenv_pending:
                self._dotenv_seen = seen
                self._dotenv_pending = True
                self.quiet.observe(self.clock())
        self._files_changed.clear()
        if self._observer is not None and self._watch_targets() != self._armed:
            self._start_file_events()  # a folder appeared or went away: watch anew
        files = [loc for loc in self.secrets.locators() if loc.scheme == "file"]
        changed, _ = self._detect(files, probe=False)
        self._hold(changed)
        self.settle()

    def _hold(self, changed: set[Locator]) -> None:
        """New content seen: wait for quiet before applying it."""
        if changed:
            self._pending |= changed
            self.quiet.observe(self.clock())

    def settle(self) -> None:
        """Apply what is pending once the quiet period is over and a last look agrees."""
        if not (self._pending or self._dotenv_pending):
            self.quiet.reset()
            return
        now = self.clock()
        if not self.quiet.due(now):
            return
        if self.quiet.minimum > 0 and not self.quiet.overdue(now) and self._changed_again():
            self.quiet.observe(self.clock())
            return
        changed, self._pending = self._pending, set()
        reload, self._dotenv_pending = self._dotenv_pending, False
        self.quiet.reset()
        if reload:
            self._reload_sources(changed)
        else:
            self._apply(changed)

    def _changed_again(self) -> bool:
        """Read what is pending once more: did it change since the last look?"""
        files = [loc for loc in self._pending if loc.scheme == "file"]
        others = [loc for loc in self._pending if loc.scheme != "file"]
        again: set[Locator] = set()
        if files:
            again |= self._detect(files, probe=False)[0]
        if others:
            again |= self._detect(others)[0]
        self._pending |= again
        if self._dotenv_pending:
            seen = self._dotenv_snapshot()
            if seen != self._dotenv_seen:
                self._dotenv_seen = seen
                return True
        return bool(again)

    def _dotenv_snapshot(self) -> tuple[bytes | None, ...]:
        contents: list[bytes | None] = []
        for path in self.dotenv_paths:
            try:
                with open(path, "rb") as handle:
                    contents.append(handle.read())
            except OSError:
                contents.append(None)
        return tuple(contents)

    def _detect(self, locators: list[Locator], probe: bool = True) -> tuple[set[Locator], bool]:
        by_scheme: dict[str, list[Locator]] = {}
        for locator in locators:
            by_scheme.setdefault(locator.scheme, []).append(locator)
        changed: set[Locator] = set()
        failed = False
        for scheme, group in by_scheme.items():
            backend = self.registry.get(scheme)
            to_read = group
            if probe:
                to_read = []
                for locator, outcome in zip(group, backend.probe_many(group), strict=True):
                    if isinstance(outcome, EnvwrapError):
                        failed |= self._failed(locator, outcome)
                    elif outcome is None and self._leased(locator):
                        # a dynamic secret: every read makes new credentials, so
                        # it is not re-read to compare; its lease schedule
                        # renews it, and re-reads it when renewal cannot
                        self._recovered(locator)
                    elif outcome is None or outcome != self.versions.get(locator):
                        to_read.append(locator)
                    else:
                        self._recovered(locator)
            if to_read:
                changed |= self._read(backend, to_read)
                failed |= bool(self._failing.keys() & set(to_read))
        return changed, failed

    def _leased(self, locator: Locator) -> bool:
        current = self.fetched.get(locator)
        return current is not None and current.lease is not None and current.lease.duration > 0

    def _read(self, backend: Backend, locators: list[Locator]) -> set[Locator]:
        changed: set[Locator] = set()
        started = time.monotonic()
        outcomes = backend.read_many(locators)
        read = {loc: o for loc, o in zip(locators, outcomes, strict=True) if isinstance(o, Fetched)}
        audit.record_reads(
            self.secrets.uses(), self._worth_auditing(read), time.monotonic() - started
        )
        for locator, outcome in zip(locators, outcomes, strict=True):
            if isinstance(outcome, EnvwrapError):
                self._failed(locator, outcome)
                continue
            self._recovered(locator)
            previous = self.fetched.get(locator)
            self.versions[locator] = outcome.version
            if previous is None or not previous.same_content(outcome):
                changed.add(locator)
            self.fetched[locator] = outcome
            self._schedule_leases({locator: outcome})
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

    def _apply(self, changed: set[Locator]) -> None:
        if not changed:
            return
        if self.splay > 0:
            delay = random.uniform(0, self.splay)
            log.info(f"secret changed; applying in {delay:.1f}s (--splay)")
            if self._stopping.wait(delay):
                return
        self._compose_and_notify(changed)

    def _compose_and_notify(self, changed: set[Locator]) -> None:
        try:
            composed = self.secrets.compose(self.fetched)
        except EnvwrapError as err:
            log.warning(f"the new secret values cannot be used; keeping the current ones: {err}")
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

    def _reload_sources(self, changed: set[Locator]) -> None:
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
                self.versions.update({loc: f.version for loc, f in fetched.items()})
                self._schedule_leases(fetched)
        except EnvwrapError as err:
            log.warning(f"the changed .env cannot be used; keeping the current values: {err}")
            self._apply(changed)  # secrets that changed meanwhile still count
            return
        self.secrets = secrets
        self._start_file_events()
        log.info(".env changed")
        audit.record_sources(secrets.uses(), self.fetched, self.dotenv_paths)
        still_used = set(secrets.locators())
        self._compose_and_notify({loc for loc in changed if loc in still_used})

    # -- leases and the store token ------------------------------------------

    def _schedule_leases(self, fetched: dict[Locator, Fetched]) -> None:
        now = self.clock()
        for locator, item in fetched.items():
            lease = item.lease
            if lease is not None and lease.duration > 0:
                self._lease_due[locator] = now + lease.duration * LEASE_RENEW_AT
            else:
                self._lease_due.pop(locator, None)
        for locator in fetched:
            # a store's login is kept alive once a secret was read from it
            self._upkeep_due.setdefault(locator.scheme, now)

    def _next_deadline(self) -> float:
        deadlines = list(self._lease_due.values())
        deadlines += [due for due in self._upkeep_due.values() if due is not None]
        return min(deadlines, default=float("inf"))

    def _renew_due(self) -> None:
        now = self.clock()
        for locator, due in list(self._lease_due.items()):
            if due <= now:
                self._renew_lease(locator)
        for scheme, upkeep_due in list(self._upkeep_due.items()):
            if upkeep_due is not None and upkeep_due <= now:
                self._upkeep(scheme)

    def _renew_lease(self, locator: Locator) -> None:
        backend = self.registry.get(locator.scheme)
        lease = self.fetched[locator].lease
        if lease is not None:
            try:
                renewed = backend.renew(lease)
            except EnvwrapError as err:
                log.info(f"lease renewal failed ({err.message}); reading the secret again")
                renewed = None
            if renewed is not None:
                self.fetched[locator].lease = renewed
                audit.record_lease(locator, renewed.duration, "renewed")
                if renewed.duration >= lease.duration * LEASE_RENEW_AT:
                    self._schedule_leases({locator: self.fetched[locator]})
                    return
        # not renewable, or near its maximum TTL: read again (new credentials)
        self._lease_due.pop(locator, None)
        self._apply(self._read(backend, [locator]))
        if locator not in self._lease_due and locator in self._failing:
            self._lease_due[locator] = self.clock() + min(self.interval, 5.0)

    def _upkeep(self, scheme: str) -> None:
        """Keep the store's login alive (renew its token, or log in again)."""
        self._upkeep_due[scheme] = None
        try:
            delay = self.registry.get(scheme).upkeep()
        except EnvwrapError as err:
            log.warning(f"cannot keep envwrap's login to the store: {err.message}", store=scheme)
            self._upkeep_due[scheme] = self.clock() + min(self.interval, 30.0)
            return
        if delay is not None:
            self._upkeep_due[scheme] = self.clock() + delay

    # -- file-system events ------------------------------------------------

    def _watched_folders(self) -> dict[str, set[str]]:
        folders: dict[str, set[str]] = {}
        for locator in self.secrets.locators():
            for path in self.registry.get(locator.scheme).watch_paths(locator):
                folder, name = os.path.split(path)
                folders.setdefault(folder, set()).add(name)
        for path in self.dotenv_paths:
            folder, name = os.path.split(path)
            folders.setdefault(folder, set()).add(name)
        return folders

    def _watch_targets(self) -> frozenset[str]:
        """The folders to watch: each wanted folder, or its nearest existing parent.

        A ``.env`` file or a secret's folder that does not exist yet (or was
        removed) is noticed when it appears in the parent; the events there make
        :meth:`check_files` arm the watch again, on the folder itself.
        """
        targets = set()
        for folder in self._watched_folders():
            target = folder
            while not os.path.isdir(target) and os.path.dirname(target) != target:
                target = os.path.dirname(target)
            targets.add(target)
        return frozenset(targets)

    def _start_file_events(self) -> bool:
        """Watch the folders of file secrets and .env files; ``True`` if any is watched."""
        folders = self._watch_targets()
        if not folders:
            return False
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.warning(
                "watchdog is not installed; files are polled only"
                " (pip install 'envwrap-secrets[watch]')"
            )
            return False
        watcher = self
        relevant = _RelevantPaths(self._watched_folders())

        class Handler(FileSystemEventHandler):  # type: ignore[misc]
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = {
                    os.fsdecode(event.src_path),
                    os.fsdecode(getattr(event, "dest_path", b"") or ""),
                }
                if not any(relevant(p) for p in paths if p):
                    # another file in the same folder -- an --audit-log written
                    # there would otherwise wake the watcher at every record
                    return
                if any(os.path.abspath(p) in watcher.dotenv_paths for p in paths if p):
                    watcher._dotenv_changed.set()
                watcher._files_changed.set()
                watcher._wake.set()

        if self._observer is not None:
            self._observer.stop()  # type: ignore[attr-defined]
        observer = Observer()
        for folder in folders:
            try:
                observer.schedule(Handler(), folder, recursive=False)
            except OSError:  # gone again, or not readable: the poll still covers it
                log.warning("cannot watch a folder; polling it", folder=folder)
        self._armed = folders
        observer.daemon = True
        observer.start()
        self._observer = observer
        return True


class _RelevantPaths:
    """Whether a file-system event's path can change a watched file.

    Relevant: a watched file itself; a ``..``-prefixed entry beside it (the
    kubelet's ``..data`` swap renames those); and any folder on the way to a
    watched folder that does not exist yet (its creation arms the watch).
    """

    def __init__(self, folders: dict[str, set[str]]) -> None:
        self.files = frozenset(
            os.path.join(folder, name) for folder, names in folders.items() for name in names
        )
        self.folders = frozenset(folders)

    def __call__(self, path: str) -> bool:
        path = os.path.abspath(path)
        if path in self.files:
            return True
        folder, name = os.path.split(path)
        if folder in self.folders and name.startswith(".."):
            return True
        return any(wanted == path or wanted.startswith(path + os.sep) for wanted in self.folders)


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
        wait=settings.wait,
        on_round=on_round,
        first_poll=first_poll,
        on_refused=on_refused,
    )
