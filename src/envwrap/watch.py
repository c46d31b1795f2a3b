"""Change detection for ``--watch`` and the sidecar (DESIGN §4).

A :class:`Watcher` owns one thread. Each round it asks every store, as cheaply
as the store allows, whether a secret changed (``Backend.probe_many``: a version
id without the value), reads only what changed (or what has no version id, to
compare content), and hands the newly composed environment to its
``on_change`` callback. Files and ``.env`` files are also watched through
file-system events (watchdog) on their folders -- which is what catches the
Kubernetes ``..data`` symlink swap -- with the poll as a safety net.

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

from envwrap import audit, log
from envwrap.backends import Backend, BackendRegistry, Fetched
from envwrap.environment import Composed, SecretEnvironment
from envwrap.errors import EnvwrapError
from envwrap.refs import Locator
from envwrap.resolve import Backoff

__all__ = ["Watcher"]

#: quiet time after a file-system event before acting, so that one kubelet
#: update (several renames) or an editor's save (truncate + write) is one change
FILE_DEBOUNCE = 0.05
#: a lease is renewed (or its secret re-read) when this share of it has passed
LEASE_RENEW_AT = 2 / 3
JITTER = 0.1

OnChange = Callable[[Composed, set[Locator]], None]


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
        self.composed: Composed | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._files_changed = threading.Event()
        self._dotenv_changed = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: object | None = None
        self._backoff: Backoff | None = None
        self._failing: set[Locator] = set()
        self._lease_due: dict[Locator, float] = {}
        self._token_due: float | None = None
        self._schedule_leases(self.fetched)

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

    def _run(self) -> None:
        next_poll = self.clock() + self._jittered(self.interval)
        while not self._stopping.is_set():
            timeout = max(0.0, min(next_poll, self._next_deadline()) - self.clock())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                if self._files_changed.is_set() or self._dotenv_changed.is_set():
                    self._debounce()
                    self.check_files()
                if self.clock() >= next_poll:
                    # the interval runs from the start of a round, so that a slow
                    # round (many secrets, a slow link) does not stretch it
                    round_start = self.clock()
                    failed = self.check_once()
                    next_poll = max(self.clock(), round_start + self._next_interval(failed))
                self._renew_due()
            except Exception as exc:  # the watcher must outlive any bug in one round
                log.error(f"watch round failed ({type(exc).__name__}); keeping current values")

    def _debounce(self) -> None:
        deadline = self.clock() + 1.0
        while self.clock() < deadline:
            self._wake.clear()
            if not self._wake.wait(FILE_DEBOUNCE):
                return

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
        """Probe every secret, read what changed, apply; ``True`` if a store failed."""
        changed, failed = self._detect(self.secrets.locators())
        self._apply(changed)
        return failed

    def check_files(self) -> None:
        """Re-read file secrets (after a file-system event), and ``.env`` if it changed."""
        if self._dotenv_changed.is_set():
            self._dotenv_changed.clear()
            self._files_changed.clear()
            self._reload_sources()
            return
        self._files_changed.clear()
        files = [loc for loc in self.secrets.locators() if loc.scheme == "file"]
        changed, _ = self._detect(files, probe=False)
        self._apply(changed)

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
                    elif outcome is None or outcome != self.versions.get(locator):
                        to_read.append(locator)
                    else:
                        self._recovered(locator)
            if to_read:
                changed |= self._read(backend, to_read)
                failed |= bool(self._failing & set(to_read))
        return changed, failed

    def _read(self, backend: Backend, locators: list[Locator]) -> set[Locator]:
        changed: set[Locator] = set()
        started = time.monotonic()
        outcomes = backend.read_many(locators)
        read = {loc: o for loc, o in zip(locators, outcomes, strict=True) if isinstance(o, Fetched)}
        audit.record_reads(self.secrets.uses(), read, time.monotonic() - started)
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

    def _failed(self, locator: Locator, error: EnvwrapError) -> bool:
        variable, reference = self.secrets.describe(locator)
        if locator not in self._failing:
            self._failing.add(locator)
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
        return True

    def _recovered(self, locator: Locator) -> None:
        if locator in self._failing:
            self._failing.discard(locator)
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
        self.composed = composed
        self.on_change(composed, changed)

    def _reload_sources(self) -> None:
        if self.reload is None:
            return
        try:
            secrets = self.reload()
            missing = [loc for loc in secrets.locators() if loc not in self.fetched]
            if missing:
                from envwrap.resolve import fetch_all

                fetched = fetch_all(
                    missing, self.registry, timeout=self.interval, describe=secrets.describe
                )
                self.fetched.update(fetched)
                self.versions.update({loc: f.version for loc, f in fetched.items()})
                self._schedule_leases(fetched)
        except EnvwrapError as err:
            log.warning(f"the changed .env cannot be used; keeping the current values: {err}")
            return
        self.secrets = secrets
        self._start_file_events()
        log.info(".env changed")
        self._compose_and_notify(set())

    # -- leases and the store token ------------------------------------------

    def _schedule_leases(self, fetched: dict[Locator, Fetched]) -> None:
        now = self.clock()
        for locator, item in fetched.items():
            lease = item.lease
            if lease is not None and lease.duration > 0:
                self._lease_due[locator] = now + lease.duration * LEASE_RENEW_AT
            else:
                self._lease_due.pop(locator, None)
        if self._token_due is None and any(loc.scheme == "vault" for loc in fetched):
            self._token_due = now

    def _next_deadline(self) -> float:
        deadlines = list(self._lease_due.values())
        if self._token_due is not None:
            deadlines.append(self._token_due)
        return min(deadlines, default=float("inf"))

    def _renew_due(self) -> None:
        now = self.clock()
        for locator, due in list(self._lease_due.items()):
            if due <= now:
                self._renew_lease(locator)
        if self._token_due is not None and self._token_due <= now:
            self._renew_token()

    def _renew_lease(self, locator: Locator) -> None:
        backend = self.registry.get(locator.scheme)
        lease = self.fetched[locator].lease
        renew = getattr(backend, "renew_lease", None)
        if lease is not None and lease.renewable and renew is not None:
            try:
                renewed = renew(lease)
                self.fetched[locator].lease = renewed
                if renewed.duration >= lease.duration * LEASE_RENEW_AT:
                    self._schedule_leases({locator: self.fetched[locator]})
                    return
            except EnvwrapError as err:
                log.info(f"lease renewal failed ({err.message}); reading the secret again")
        # not renewable, or near its maximum TTL: read again (new credentials)
        self._lease_due.pop(locator, None)
        self._apply(self._read(backend, [locator]))
        if locator not in self._lease_due and locator in self._failing:
            self._lease_due[locator] = self.clock() + min(self.interval, 5.0)

    def _renew_token(self) -> None:
        backend = self.registry.get("vault")
        renew = getattr(backend, "renew_token", None)
        self._token_due = None
        if renew is None:
            return
        try:
            ttl = renew()
        except EnvwrapError as err:
            log.warning(f"cannot renew the Vault token: {err.message}")
            self._token_due = self.clock() + min(self.interval, 30.0)
            return
        if ttl:
            self._token_due = self.clock() + max(1.0, ttl * LEASE_RENEW_AT)

    # -- file-system events ------------------------------------------------

    def _watched_folders(self) -> dict[str, set[str]]:
        folders: dict[str, set[str]] = {}
        for locator in self.secrets.locators():
            if locator.scheme == "file":
                folder, name = os.path.split(locator.path)
                folders.setdefault(folder, set()).add(name)
        for path in self.dotenv_paths:
            folder, name = os.path.split(path)
            folders.setdefault(folder, set()).add(name)
        return folders

    def _start_file_events(self) -> bool:
        """Watch the folders of file secrets and .env files; ``True`` if any is watched."""
        folders = self._watched_folders()
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

        class Handler(FileSystemEventHandler):  # type: ignore[misc]
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = {
                    os.fsdecode(event.src_path),
                    os.fsdecode(getattr(event, "dest_path", b"") or ""),
                }
                if any(os.path.abspath(p) in watcher.dotenv_paths for p in paths if p):
                    watcher._dotenv_changed.set()
                watcher._files_changed.set()
                watcher._wake.set()

        if self._observer is not None:
            self._observer.stop()  # type: ignore[attr-defined]
        observer = Observer()
        for folder in folders:
            if os.path.isdir(folder):
                observer.schedule(Handler(), folder, recursive=False)
            else:
                log.warning("cannot watch a missing folder; polling it", folder=folder)
        observer.daemon = True
        observer.start()
        self._observer = observer
        return True
