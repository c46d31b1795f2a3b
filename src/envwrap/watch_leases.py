"""The watcher's schedule of leases and logins (docs/rotation.md): dynamic secrets'
leases renewed at two thirds of their TTL, and each store's own login kept alive
(``Backend.upkeep``: renew the token, or log in again) once a secret was read from it.

:class:`Upkeep` decides when; the renewals go through the ``Backend`` contract. A
lease that cannot be renewed (or no longer extends) is handed back to the watcher,
which reads its secret again for fresh credentials.
"""

from __future__ import annotations

from envwrap import log
from envwrap.errors import EnvwrapError
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from envwrap.backends import BackendRegistry, Fetched
    from envwrap.refs import Locator

__all__ = ["LEASE_RENEW_AT", "Upkeep"]

#: a lease is renewed (or its secret re-read) when this share of it has passed
LEASE_RENEW_AT = 2 / 3
#: a secret whose re-read failed is tried again this soon (capped by --interval)
REREAD_RETRY = 5.0
#: a login whose upkeep failed is tried again this soon (capped by --interval)
UPKEEP_RETRY = 30.0


class Upkeep:
    """When each lease is renewed and each store's login kept alive; does the renewing."""

    def __init__(self, registry: BackendRegistry, clock: Callable[[], float],
                 interval: float) -> None:
        self.registry = registry
        self.clock = clock
        self.interval = interval
        self._lease_due: dict[Locator, float] = {}
        #: scheme -> when its backend's upkeep is due; None: never again
        self._login_due: dict[str, float | None] = {}

    def schedule(self, fetched: Mapping[Locator, Fetched]) -> None:
        """Secrets were read: schedule their leases, and their stores' logins."""
        now = self.clock()
        for locator, item in fetched.items():
            lease = item.lease
            if lease is not None and lease.duration > 0:
                self._lease_due[locator] = now + lease.duration * LEASE_RENEW_AT
            else:
                self._lease_due.pop(locator, None)
            # a store's login is kept alive once a secret was read from it
            self._login_due.setdefault(locator.scheme, now)

    def retry_read(self, locator: Locator) -> None:
        """The re-read of a leased secret failed: try again soon."""
        self._lease_due[locator] = self.clock() + min(self.interval, REREAD_RETRY)

    def next_deadline(self) -> float:
        deadlines = list(self._lease_due.values())
        deadlines += [due for due in self._login_due.values() if due is not None]
        return min(deadlines, default=float("inf"))

    def run_due(self, fetched: Mapping[Locator, Fetched]) -> list[Locator]:
        """Renew what is due; the leased secrets to read again (not renewable, or near
        their maximum TTL)."""
        now = self.clock()
        reread = [locator for locator, due in list(self._lease_due.items())
                  if due <= now and not self._renew(locator, fetched)]
        for scheme, due in list(self._login_due.items()):
            if due is not None and due <= now:
                self._keep_login(scheme)
        return reread

    def _renew(self, locator: Locator, fetched: Mapping[Locator, Fetched]) -> bool:
        """Renew the lease of ``locator``; ``False``: read the secret again."""
        item = fetched.get(locator)
        lease = item.lease if item is not None else None
        self._lease_due.pop(locator, None)
        if item is None or lease is None:
            return True
        try:
            renewed = self.registry.get(locator.scheme).renew(lease)
        except EnvwrapError as err:
            log.info(f"lease renewal failed ({err.message}); reading the secret again")
            return False
        if renewed is None:
            return False
        item.lease = renewed
        audit.record_lease(locator, renewed.duration, "renewed")
        if renewed.duration < lease.duration * LEASE_RENEW_AT:
            return False  # near its maximum TTL: new credentials
        self.schedule({locator: item})
        return True

    def _keep_login(self, scheme: str) -> None:
        self._login_due[scheme] = None
        try:
            delay = self.registry.get(scheme).upkeep()
        except EnvwrapError as err:
            log.warning(f"cannot keep envwrap's login to the store: {err.message}", store=scheme)
            self._login_due[scheme] = self.clock() + min(self.interval, UPKEEP_RETRY)
            return
        if delay is not None:
            self._login_due[scheme] = self.clock() + delay
