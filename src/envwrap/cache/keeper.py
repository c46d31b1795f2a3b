"""Keeping ``--cache`` on what the program runs on, while watching (docs/cache.md).

:class:`CacheKeeper` is an observer of the rotation policy (``envwrap.rotation``),
handed in at construction; the policy calls it on its observer thread, never the
supervisor's, one call after the other -- so a deletion is never overtaken by a
write that was decided before it.
"""

from __future__ import annotations

import time

from envwrap import log
from envwrap.cache.fallback import REFRESH_SHARE, FallbackCache, configured, revokes
from envwrap.errors import EnvwrapError
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from envwrap.backends import Fetched
    from envwrap.environment import Composed, SecretEnvironment
    from envwrap.refs import Locator

__all__ = ["CacheKeeper", "keeper"]


def keeper() -> CacheKeeper | None:
    """The observer that keeps ``--cache`` on what runs; ``None`` without ``--cache``."""
    cache = configured()
    return CacheKeeper(cache) if cache is not None else None


class CacheKeeper:
    """Keeps ``--cache`` on what the program runs on; an observer of the rotation policy.

    Told when a new generation runs, and after each watcher round with what the
    stores hold: values confirmed live are rewritten, which restarts their
    ``--cache-max-age``. Told when a store answers that a secret is gone or
    denied: the file is deleted, and nothing is written again until a round in
    which every store answered -- revoked access stays revoked, also for a
    restart during a later outage.
    """

    follows_rounds = True

    def __init__(self, cache: FallbackCache) -> None:
        self.cache = cache
        #: a store refused a secret; cleared by a round in which every store answered
        self._refused = False

    def generation_changed(self, running: Composed, stopped: Composed) -> None:
        if self.cache.serving or self._refused:
            # serving: some values may still be the cached ones (written once all are
            # live); refused: the store's word stands until it answers again
            return
        self._save(running.fetched)

    def round_done(self, running: Composed, secrets: SecretEnvironment,
                   live: Mapping[Locator, Fetched]) -> None:
        """A watcher round where every store answered: ``live`` is what they hold."""
        cache = self.cache
        refused, self._refused = self._refused, False  # the stores answer again
        if not _runs_on(running, secrets, live):
            return
        going_live = cache.serving
        if not (going_live or refused) and cache.saved_at is not None and (
            time.time() - cache.saved_at < cache.max_age * REFRESH_SHARE
        ):
            return
        cache.went_live()
        self._save(live)
        if going_live:
            # after the write, so that whoever sees this record finds the live values cached
            log.info("every store answers again; the program runs on live values",
                     file=cache.path)
            audit.record("cache", outcome="live", file=cache.path)

    def access_refused(self, locator: Locator, error: EnvwrapError) -> None:
        """A store answered, while watching, that a secret cannot be read."""
        if not revokes(error):
            return
        self._refused = True
        self.cache.discard(f"a store answered {audit.outcome_of(error.exit_code)} "
                           f"for {locator}")

    def _save(self, fetched: Mapping[Locator, Fetched]) -> None:
        try:
            self.cache.save(fetched)
        except EnvwrapError as err:
            log.error(f"cannot write the fallback cache: {err}")


def _runs_on(running: Composed, secrets: SecretEnvironment,
             live: Mapping[Locator, Fetched]) -> bool:
    """Whether what the program runs on composes to what the stores hold now."""
    locators = secrets.locators()
    if any(loc not in running.fetched or loc not in live for loc in locators):
        return False
    try:
        return (secrets.compose(running.fetched).environment
                == secrets.compose(dict(live)).environment)
    except EnvwrapError:
        return False
