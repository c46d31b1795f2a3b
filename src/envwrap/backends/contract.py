"""What a backend is: :class:`Backend`, and what it hands back, :class:`Fetched` and :class:`Lease`.

A backend reads secrets from one kind of store. It knows nothing about
variables, processes or supervision. Everything envwrap asks of a store goes
through the methods below; each but ``read`` has a default that does nothing
(or the obvious thing), so a plug-in store implements only what its store has:

Reading
    ``read(locator) -> Fetched``: read one secret; raise an :mod:`envwrap.errors`
    error when it cannot -- an SDK or transport exception is mapped, an
    exception from a bug (``KeyError``, ``TypeError``...) is not.
    ``read_many(locators) -> list[Fetched | EnvwrapError]``: several at once; the
    default runs ``read`` concurrently, a store with a batch API overrides it.
    ``validate(locator)``: raise a :class:`~envwrap.errors.ReferenceSyntaxError`
    for a locator the store can never serve; called before it is read.

Watching (``--watch``, the sidecar)
    ``probe(locator) -> str | Fetched | None`` and ``probe_many``: a cheap change
    check -- the current revision without the value; or the secret itself
    (a :class:`Fetched`) when reading it costs the store no more than asking for
    its revision, so that a change needs no second request; or ``None`` when the
    store has no revision (the watcher then re-reads and compares). The watcher
    compares the revision with :attr:`Fetched.revision` of the last read: what a
    read saw is what is watched (:func:`revision_of`).
    ``watch_paths(locator) -> tuple[str, ...]``: files whose change may change
    the secret; the watcher follows them with file-system events.

Leases and login (dynamic secrets, ``--revoke-on-exit``)
    ``renew(lease) -> Lease | None``: extend a lease; ``None`` when it cannot be
    extended, and the secret is read again for a fresh one.
    ``revoke(lease) -> bool``: end a lease now; ``False`` when the store cannot.
    ``upkeep() -> float | None``: keep envwrap's own login alive (renew its
    token, or log in again); returns the seconds until it is due again,
    ``None`` for never. Called once a secret of the store was read.
    ``release() -> bool``: revoke what envwrap logged in with, when it exits;
    never a credential it was given. ``True`` when it revoked something.
    ``credential_names``: the variables that hold envwrap's credentials for
    this store; they are removed from the program's environment.

Writing (``envwrap import``, optional)
    ``write(locator, data, replace=False) -> str | None``: store ``data`` as one
    key-value secret; its new version id. Raises :class:`SecretExists` when the
    secret exists and not ``replace``. The default says that the store cannot
    be written (exit 64).

``close()`` releases connections.

Backends are constructed with the merged environment (process environment plus
``.env``) so that store settings such as ``VAULT_ADDR`` may live in ``.env``.
"""

from __future__ import annotations

from envwrap.backends.fanout import each
from envwrap.errors import ConfigError, StoreUnavailableError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings anyway
    from collections.abc import Mapping, Sequence
    from typing import Any, ClassVar

    from envwrap.errors import EnvwrapError
    from envwrap.refs import Locator

__all__ = ["MAX_SECRET_BYTES", "Backend", "Fetched", "Lease", "SecretExists", "checked_version",
           "revision_of"]

#: a secret, or a store's reply carrying one, larger than this is a mistake (a log,
#: a disk image, a hostile server), not a secret: it is refused, never read whole.
#: A program's environment holds at most 128 KiB per variable anyway.
MAX_SECRET_BYTES = 1024 * 1024


#: the characters of a version id: KV version numbers, AWS VersionIds (UUIDs)
_VERSION_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:+"
)
_LONGEST_VERSION = 128


def checked_version(value: object) -> str | None:
    """A store's version id as text, checked: a whole number, or an id of letters,
    digits and ``-_.:+`` (at most 128 characters); ``None`` stays ``None``.

    Anything else -- an object, a list, free text -- is a reply no store sends,
    and may hold anything (a value): it is never logged or audited, but refused
    with a :class:`StoreUnavailableError` that does not quote it.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if (isinstance(value, str) and 0 < len(value) <= _LONGEST_VERSION
            and _VERSION_CHARACTERS.issuperset(value)):
        return value
    raise StoreUnavailableError(
        "the store answered with a version that is not a number or an id",
        hint="is the store's address that of the store, not a proxy or another service?",
    )


class SecretExists(ConfigError):
    """``write`` without ``replace`` found the secret there already (exit 78)."""


class Lease:
    """A lease that came with a dynamic secret (Vault ``database/creds/ROLE``)."""

    __slots__ = ("duration", "lease_id", "renewable")

    def __init__(self, lease_id: str, duration: int, renewable: bool) -> None:
        self.lease_id = lease_id
        self.duration = duration
        self.renewable = renewable

    def __repr__(self) -> str:
        return f"Lease({self.lease_id!r}, duration={self.duration}, renewable={self.renewable})"


class Fetched:
    """One secret as read from its store.

    ``data`` is the secret: text, or a mapping for key-value stores (Vault KV).
    It never appears in ``repr``. ``version`` is the store's version id (shown by
    ``check`` and the audit log); ``None`` when the store has no versions.
    ``revision`` is what ``Backend.probe`` answers for the same state: the version
    id unless the store needs more to tell states apart (a Vault KV secret deleted
    and written again restarts its versions at 1: its revision adds the version's
    creation time). The version is checked here (:func:`checked_version`), for
    every store, before anything logs it.
    """

    __slots__ = ("data", "lease", "revision", "version")

    def __init__(
        self,
        data: str | Mapping[str, Any],
        version: str | None = None,
        lease: Lease | None = None,
        revision: str | None = None,
    ) -> None:
        self.data = data
        self.version = checked_version(version)
        self.lease = lease
        self.revision = revision if revision is not None else self.version

    def __repr__(self) -> str:
        return f"Fetched(data=*****, version={self.version!r}, lease={self.lease!r})"

    def same_content(self, other: Fetched) -> bool:
        return self.data == other.data


def revision_of(probed: str | Fetched | None) -> str | None:
    """The revision a probe answered, whether it read the secret or only its revision."""
    return probed.revision if isinstance(probed, Fetched) else probed


class Backend:
    """Base class of every backend; see the module docstring for the contract."""

    #: the scheme this backend serves, e.g. ``"vault"``
    scheme: ClassVar[str] = ""
    #: how many reads may run at once in the default ``read_many``
    max_concurrency: ClassVar[int] = 16
    #: variables holding envwrap's own credentials for this store: never passed
    #: to the program. A built-in store lists them in the registry's table too,
    #: so that they are known without importing the store's code.
    credential_names: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    # -- reading

    def read(self, locator: Locator) -> Fetched:
        raise NotImplementedError

    def read_many(self, locators: Sequence[Locator]) -> list[Fetched | EnvwrapError]:
        return each(self.read, locators, limit=self.max_concurrency, name=self.scheme)

    def validate(self, locator: Locator) -> None:
        """Raise an :mod:`envwrap.errors` error for a locator no read can serve."""

    # -- watching

    def probe(self, locator: Locator) -> str | Fetched | None:
        """The current revision of ``locator``, cheaply, or the secret itself when a
        read costs no more; ``None``: re-read to compare.

        Raises an :mod:`envwrap.errors` error like ``read`` does.
        """
        return None

    def probe_many(
        self, locators: Sequence[Locator]
    ) -> list[str | Fetched | EnvwrapError | None]:
        """``probe`` for several locators, concurrently; a store with a batch API overrides it."""
        return each(self.probe, locators, limit=self.max_concurrency, name=self.scheme)

    def watch_paths(self, locator: Locator) -> tuple[str, ...]:
        """Files whose change may change this secret (none: the poll alone finds changes)."""
        return ()

    # -- leases and login

    def renew(self, lease: Lease) -> Lease | None:
        """The lease extended; ``None`` when it cannot be (read the secret again)."""
        return None

    def revoke(self, lease: Lease) -> bool:
        """End the lease now; ``False`` when this store cannot revoke leases."""
        return False

    def upkeep(self) -> float | None:
        """Keep envwrap's login alive; seconds until it is due again, ``None`` for never."""
        return None

    def release(self) -> bool:
        """Revoke the login envwrap made (never a credential it was given); ``True`` if it did."""
        return False

    # -- writing

    def write(
        self, locator: Locator, data: Mapping[str, str], *, replace: bool = False
    ) -> str | None:
        """Store ``data`` as one key-value secret at ``locator``; its new version id.

        Raises :class:`SecretExists` when the secret exists and ``replace`` is
        false -- checked by the store itself where it can (no race) -- and an
        :mod:`envwrap.errors` error as ``read`` does.
        """
        raise UsageError(f"envwrap cannot write {self.scheme}:// secrets",
                         hint="envwrap import writes to vault:// and aws-sm:// secrets")

    def close(self) -> None:
        """Release connections; called once when envwrap is done with the store."""
