"""Writing one KV secret, for ``envwrap import`` (docs/import.md).

KV v2: one new version; without ``replace`` the write carries ``cas=0``, so
Vault itself refuses it when the secret exists (no window between a check and
the write). KV v1 has no check-and-set: the secret is looked up first. Any
other engine, or a path whose mount cannot be detected, is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from envwrap.backends.contract import SecretExists
from envwrap.backends.vault.auth import Connection
from envwrap.backends.vault.errors import Missing, StatusError
from envwrap.backends.vault.mounts import Mounts, below
from envwrap.backends.vault.transport import body, quoted, section, whole
from envwrap.errors import ConfigError

__all__ = ["write_kv"]

_EXISTS_HINT = "pass --force to write a new version of it"


def write_kv(
    connection: Connection, mounts: Mounts, path: str, data: Mapping[str, str], *, replace: bool
) -> str | None:
    """Write ``data`` as the secret at ``path``; the new KV v2 version (``None`` on KV v1)."""
    mount = mounts.of(path)
    if mount is None or not mount.kv:
        what = "is not one" if mount is not None else \
            "cannot be detected (no such mount, or no access to it)"
        raise ConfigError(
            f"envwrap can only write to a KV secrets engine, and the engine at this path {what}",
            hint="`bao secrets list` shows the mounts; `bao secrets enable -version=2 kv` adds one",
        )
    if not mount.kv2:
        if not replace and _kv1_exists(connection, path):
            raise SecretExists("the secret exists already", hint=_EXISTS_HINT)
        connection.post(quoted(path), dict(data))
        return None
    name = below(path, mount)
    if not name:
        raise ConfigError("the path names a mount, not a secret in it",
                          hint="add the secret's name: vault://secret/app")
    payload: dict[str, object] = {"data": dict(data)}
    if not replace:
        payload["options"] = {"cas": 0}  # write only if there is no version yet
    try:
        reply = connection.post(f"{quoted(mount.path)}data/{quoted(name)}", payload)
    except StatusError as exc:
        if exc.status == 400 and not replace and any("check-and-set" in e for e in exc.errors):
            raise SecretExists(
                "the secret exists already (or has versions, perhaps deleted ones)",
                hint=_EXISTS_HINT,
            ) from None
        raise
    return str(whole(section(body(reply), "data"), "version"))


def _kv1_exists(connection: Connection, path: str) -> bool:
    try:
        connection.get(quoted(path))
    except Missing:
        return False
    return True
