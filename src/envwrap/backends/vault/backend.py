"""The Vault backend: reading KV v1, KV v2 (with versions) and any readable path.

The mount under a path is detected once per mount (:mod:`.mounts`). On a KV v2
mount the logical path (``secret/app``) and the API path (``secret/data/app``)
both work -- a path whose first part below the mount is ``data/`` is taken as
the API path, so a KV v2 secret whose own name starts with ``data/`` is written
``secret/data/data/NAME``. ``?version=N`` reads version N (KV v2 only); a
negative N counts back from the current version (``-1`` is the one before
it). A KV v1 secret, or any other readable path (dynamic secrets such as
``database/creds/ROLE``), is read as it is; the lease it carries is kept in
:attr:`Fetched.lease`.

:attr:`Fetched.data` is the secret's key-value mapping; ``#KEY``,
``#/json/pointer`` and the whole secret as JSON are selected by the resolver.
:attr:`Fetched.version` is the KV v2 version number (``None`` elsewhere).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envwrap.backends.contract import Backend, Fetched, Lease
from envwrap.backends.registry import BUILTIN_BACKENDS
from envwrap.backends.vault.auth import Connection
from envwrap.backends.vault.errors import Denied, Missing, UnexpectedReply, mapped
from envwrap.backends.vault.mounts import Mount, Mounts, below
from envwrap.backends.vault.settings import read_settings, warn_if_plain_http
from envwrap.backends.vault.transport import body, quoted, section, whole
from envwrap.errors import NotFoundError
from envwrap.refs import Locator

__all__ = ["VaultBackend"]


class VaultBackend(Backend):
    """Vault / OpenBao; see :mod:`envwrap.backends.vault` for references and settings.

    * ``probe(locator)``: KV v2 -- the current version is found by reading it
      (``GET MOUNT/data/PATH``): one request, as cheap for the store as the
      metadata, allowed by the policy that allows the read, and a change then
      costs no second request (docs/rotation.md); its revision adds the
      version's creation time, so that a secret deleted and written again
      (versions start over at 1) is a change. A fixed ``?version=N`` gives N; a
      negative one is counted from the metadata's current version. ``None``
      (re-read to compare) for KV v1, other paths, and when reading the
      metadata is denied.
    * ``renew(lease)``: ``sys/leases/renew``; ``revoke(lease)``: ``sys/leases/revoke``.
    * ``upkeep()`` and ``release()``: envwrap's own token (:mod:`.auth`).

    The connection is shared by the reader threads of ``read_many``: its pool
    holds a kept-alive connection per thread.
    """

    scheme = "vault"
    #: a resolution reads every distinct path at once; 64 threads keep 50 paths
    #: to one round trip (the connection pool is sized to match)
    max_concurrency = 64
    credential_names = BUILTIN_BACKENDS["vault"].credential_names

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(environ)
        self.settings = read_settings(environ)
        self.connection = Connection(self.settings, pool_size=self.max_concurrency)
        self.mounts = Mounts(self.connection)
        warn_if_plain_http(self.settings.addr)

    # -- reading ----------------------------------------------------------------------

    def read(self, locator: Locator) -> Fetched:
        with mapped(self.settings.addr):
            mount = self.mounts.of(locator.path)
            if mount is not None and mount.kv2:
                return self._read_kv2(mount, below(locator.path, mount), locator)
            if locator.param("version") is not None:
                raise NotFoundError(
                    "?version= needs a KV version 2 mount, and this path is not on one",
                    hint="drop ?version=, or check the mount with `bao secrets list`",
                )
            return self._read_plain(locator.path)

    def probe(self, locator: Locator) -> str | Fetched | None:
        with mapped(self.settings.addr):
            mount = self.mounts.of(locator.path)
            if mount is None or not mount.kv2:
                return None
            requested = _requested_version(locator)
            if requested is not None and requested > 0:
                return str(requested)
            name = below(locator.path, mount)
            if requested is None:
                return self._read_kv2(mount, name, locator)
            current = self._current_version(mount, name)
            if current is None:
                return None  # metadata denied: the watcher re-reads and compares
            return str(_absolute(current, requested))

    # -- leases and login -------------------------------------------------------------

    def renew(self, lease: Lease) -> Lease | None:
        """``sys/leases/renew``; the lease with its new duration. 65 for an unknown lease."""
        if not lease.renewable:
            return None
        with mapped(self.settings.addr, action="renew the lease"):
            reply = body(self.connection.put("sys/leases/renew", {"lease_id": lease.lease_id}))
            return Lease(str(reply.get("lease_id") or lease.lease_id),
                         whole(reply, "lease_duration"), bool(reply.get("renewable")))

    def revoke(self, lease: Lease) -> bool:
        """``sys/leases/revoke``: end a dynamic secret now (Vault deletes the credentials)."""
        with mapped(self.settings.addr, action="revoke the lease"):
            self.connection.put("sys/leases/revoke", {"lease_id": lease.lease_id})
        return True

    def upkeep(self) -> float | None:
        return self.connection.upkeep()

    def release(self) -> bool:
        return self.connection.release()

    def close(self) -> None:
        self.connection.close()

    # -- writing (envwrap import) -----------------------------------------------------

    def write(
        self, locator: Locator, data: Mapping[str, str], *, replace: bool = False
    ) -> str | None:
        """One KV secret, a new version (:mod:`.writer`); KV v2 refuses an existing one."""
        from envwrap.backends.vault.writer import write_kv

        with mapped(self.settings.addr, action="write the secret"):
            return write_kv(self.connection, self.mounts, locator.path, data, replace=replace)

    # -- KV v2 and plain paths --------------------------------------------------------

    def _read_kv2(self, mount: Mount, name: str, locator: Locator) -> Fetched:
        if not name:
            raise NotFoundError("the path names a mount, not a secret in it")
        version = self._version_to_read(mount, name, locator)
        params = {"version": str(version)} if version is not None else None
        try:
            response = self.connection.get(f"{quoted(mount.path)}data/{quoted(name)}", params)
        except Missing:
            if version is None:
                raise NotFoundError(
                    "no such secret (or its current version was deleted)",
                    hint="check the path; `bao kv get MOUNT/PATH` shows what exists",
                ) from None
            raise NotFoundError(
                f"no version {version} of this secret (never written, deleted or destroyed)",
                hint="`bao kv metadata get MOUNT/PATH` lists the versions",
            ) from None
        reply = section(body(response), "data")
        data = reply.get("data")
        if not isinstance(data, Mapping):
            raise NotFoundError("this version of the secret was deleted")
        metadata = section(reply, "metadata")
        number = str(whole(metadata, "version"))
        # the current version is watched by its revision: versions start over at 1
        # when a secret is deleted (metadata and all) and written again -- a dev
        # server restarted and seeded -- so the number alone could stand for other values
        revision = _revision(number, metadata.get("created_time")) if version is None else None
        return Fetched(data, version=number, revision=revision)

    def _read_plain(self, path: str) -> Fetched:
        try:
            response = self.connection.get(quoted(path))
        except Missing:
            raise NotFoundError(
                "nothing at this path (no such secret, or no such mount)",
                hint="check the mount and path; `bao secrets list` shows the mounts",
            ) from None
        if not isinstance(response, Mapping):  # 204: the path exists but holds nothing
            raise NotFoundError("Vault returned no data for this path")
        data = response.get("data")
        if not isinstance(data, Mapping):
            raise NotFoundError("Vault returned no data for this path")
        return Fetched(data, lease=_lease_of(response))

    def _version_to_read(self, mount: Mount, name: str, locator: Locator) -> int | None:
        requested = _requested_version(locator)
        if requested is None or requested > 0:
            return requested
        current = self._current_version(mount, name)
        if current is None:
            # metadata may be denied while data is allowed: learn the current
            # version from a read of the latest data instead
            current = int(self._read_kv2(mount, name, _without_version(locator)).version or 0)
        return _absolute(current, requested)

    def _current_version(self, mount: Mount, name: str) -> int | None:
        """The current version from the secret's metadata; ``None`` when that is denied."""
        metadata = self._metadata(mount, name)
        return None if metadata is None else whole(metadata, "current_version")

    def _metadata(self, mount: Mount, name: str) -> Mapping[str, Any] | None:
        """The secret's metadata (``data`` of the reply); ``None`` when reading it is denied."""
        if not name:
            raise NotFoundError("the path names a mount, not a secret in it")
        try:
            response = self.connection.get(f"{quoted(mount.path)}metadata/{quoted(name)}")
        except Denied:
            return None
        except Missing:
            raise NotFoundError("no such secret") from None
        return section(body(response), "data")


def _revision(version: str, created_time: object) -> str:
    """A KV v2 version told apart from a version of the same number before a delete."""
    return f"{version}@{created_time}" if isinstance(created_time, str) else version


def _lease_of(response: Mapping[str, Any]) -> Lease | None:
    # KV v1 reports a lease_duration (its refresh interval) without a lease id
    lease_id = response.get("lease_id")
    if not lease_id:
        return None
    renewable = response.get("renewable", False)
    if not isinstance(lease_id, str) or not isinstance(renewable, bool):
        raise UnexpectedReply("the lease is not a lease id and a renewable flag")
    return Lease(lease_id, whole(response, "lease_duration"), renewable)


def _requested_version(locator: Locator) -> int | None:
    text = locator.param("version")
    if text is None:
        return None
    number = int(text)  # the reference grammar has checked it is an integer
    if number == 0:
        # Vault would answer version 0 with the latest; a pinned reference must not
        raise NotFoundError("there is no version 0: versions count from 1",
                            hint="use ?version=N (N >= 1) or a negative N to count back")
    return number


def _absolute(current: int, requested: int | None) -> int:
    if requested is None:
        return current
    number = current + requested
    if number < 1:
        raise NotFoundError(
            f"no version {requested} of this secret: the current version is {current}"
        )
    return number


def _without_version(locator: Locator) -> Locator:
    return Locator(locator.scheme, locator.path,
                   tuple((k, v) for k, v in locator.params if k != "version"))
