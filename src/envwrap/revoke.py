"""``--revoke-on-exit``: give back what envwrap obtained.

Dynamic secrets (``database/creds/ROLE``, ``rabbitmq/creds/ROLE``) come with
a lease; once no generation of the program uses a lease, revoking it makes the
store delete the credentials at once instead of at the end of its TTL (the
team's "delete old secret"). :class:`LeaseRevoker` is an observer of the
rotation policy: when a new generation replaces the old one, the policy tells
it what each runs on, and the leases only the stopped one used are revoked;
when envwrap exits, every lease it obtained, then the token it logged in with
(AppRole, Kubernetes; never a ``VAULT_TOKEN`` it was given). Revocation goes
through the backends' ``revoke(lease)`` and ``release()``; a failure is logged,
never fatal.

The policy hears of a handoff once the new generation is ready and the old one
was *asked* to stop; the old one still answers the requests it had accepted, with
the old credentials. So the revoker is also a sink of the event stream: it follows
the generations that run (``start`` and ``child_exit`` events) and holds stale
leases back until only one generation is left (docs/rotation.md).
"""

from __future__ import annotations

import threading

from envwrap import log
from envwrap.errors import EnvwrapError
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from envwrap.backends import BackendRegistry, Fetched, Lease
    from envwrap.environment import Composed, SecretEnvironment
    from envwrap.refs import Locator

__all__ = ["LeaseRevoker"]

Leases = dict[str, tuple["Locator", "Lease"]]  # lease id -> where it came from, the lease


def leases_of(fetched: Mapping[Locator, Fetched]) -> Leases:
    return {item.lease.lease_id: (locator, item.lease)
            for locator, item in fetched.items() if item.lease is not None}


class LeaseRevoker:
    """Revokes the leases a stopped generation alone used, and all of them at exit."""

    follows_rounds = False  # leases follow generations, not polls

    def __init__(self, registry: BackendRegistry, first: Mapping[Locator, Fetched]) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        #: every lease envwrap obtained (what runs is the rotation policy's to know)
        self._obtained = leases_of(first)
        self._revoked: set[str] = set()
        #: the PIDs of the generations that run (``start`` until ``child_exit``)
        self._live: set[object] = set()
        #: stale leases waiting for the generation that used them to exit
        self._pending: Leases = {}
        self._workers: list[threading.Thread] = []

    def generation_changed(self, running: Composed, stopped: Composed) -> None:
        """A new generation runs on ``running``: revoke leases only ``stopped`` used,
        once it has exited."""
        leases = leases_of(running.fetched)
        stale = {i: lease for i, lease in leases_of(stopped.fetched).items() if i not in leases}
        with self._lock:
            self._obtained.update(leases)
            if len(self._live) > 1:  # a handoff: the old generation is still finishing
                self._pending.update(stale)
                return
        self._revoke(stale)

    def handle(self, event: str, fields: Mapping[str, object]) -> None:
        """An event sink: follow the generations; revoke what waited once one is left."""
        if event not in {"start", "child_exit"}:
            return
        with self._lock:
            if event == "start":
                self._live.add(fields.get("pid"))
            else:
                self._live.discard(fields.get("pid"))
            if len(self._live) > 1 or not self._pending:
                return
            due, self._pending = self._pending, {}
            # a sink must be quick: the store is called on a thread of its own
            worker = threading.Thread(target=self._revoke, args=(due,), daemon=True,
                                      name="envwrap-revoke")
            self._workers.append(worker)
        worker.start()

    def round_done(self, running: Composed, secrets: SecretEnvironment,
                   live: Mapping[Locator, Fetched]) -> None:
        """Nothing to do: leases follow generations, not polls (never called)."""

    def access_refused(self, locator: Locator, error: EnvwrapError) -> None:
        """Nothing to do: the leases stay with the generation that uses them."""

    def close(self, also: Mapping[Locator, Fetched] | None = None) -> None:
        """envwrap exits: revoke every lease obtained (and ``also``'s), then the token."""
        with self._lock:
            if also is not None:
                self._obtained.update(leases_of(also))
            leases = dict(self._obtained)
            workers = list(self._workers)
        for worker in workers:
            worker.join(10.0)
        self._revoke(leases)
        for scheme, backend in sorted(self.registry.backends().items()):
            try:
                if backend.release():
                    log.info("revoked envwrap's login token", store=scheme)
                    audit.record("revoke", store=scheme, outcome="ok", detail="login token")
            except EnvwrapError as err:
                log.warning(f"cannot revoke envwrap's login token: {err.message}", store=scheme)
                audit.record("revoke", store=scheme, outcome=audit.outcome_of(err.exit_code),
                             detail="login token")

    def _revoke(self, leases: Leases) -> None:
        for lease_id, (locator, lease) in leases.items():
            with self._lock:
                if lease_id in self._revoked:
                    continue
                self._revoked.add(lease_id)
            try:
                if not self.registry.get(locator.scheme).revoke(lease):
                    continue  # the store cannot revoke leases
            except EnvwrapError as err:
                log.warning(f"cannot revoke a lease: {err.message}",
                            reference=str(locator))
                audit.record("revoke", store=locator.scheme, path=locator.path_with_query,
                             outcome=audit.outcome_of(err.exit_code), detail=err.message)
                continue
            log.info("revoked a lease", reference=str(locator))
            audit.record_lease(locator, 0, "revoked")
