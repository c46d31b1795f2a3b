"""envwrap's login to Vault, shared by a backend's reader threads, and its upkeep.

The login method comes from the settings (see :mod:`.settings`): a token
(``VAULT_TOKEN``, ``~/.vault-token``) is used as it is; AppRole and Kubernetes
log in once, for every thread, on first use. :meth:`Connection.upkeep` keeps
the token alive: it renews a renewable token and logs in again (AppRole,
Kubernetes) when the token cannot be renewed or renewal no longer extends it.
:meth:`Connection.release` revokes a token envwrap logged in for -- never one
it was given, which belongs to its user.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from envwrap.backends.vault.errors import StatusError, UnexpectedReply, mapped
from envwrap.backends.vault.settings import Settings
from envwrap.backends.vault.transport import (
    Transport,
    body,
    header_value,
    is_header_safe,
    quoted,
    section,
    whole,
)
from envwrap.errors import AuthError, ConfigError

__all__ = ["Connection"]

#: the token is renewed when this share of its TTL has passed
RENEW_AT = 2 / 3
#: a renewal that adds no more than this (seconds; TTLs are rounded) did not extend it
RENEWAL_SLACK = 2


class Connection:
    """One backend's requests to Vault, logged in once for all its threads; thread-safe."""

    def __init__(self, settings: Settings, pool_size: int) -> None:
        self.settings = settings
        self._transport = Transport(settings, pool_size)
        self._lock = threading.Lock()
        self._token: str | None = None

    @property
    def token(self) -> str:
        """The token requests carry; the first caller logs in for all threads."""
        with self._lock:
            if self._token is None:
                self._token, _ = self._login()
            return self._token

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET /v1/PATH``: the reply's JSON (see :meth:`Transport.request`)."""
        return self._transport.request("GET", path, params=params, token=self.token)

    def put(self, path: str, payload: Mapping[str, Any]) -> Any:
        return self._transport.request("PUT", path, payload=payload, token=self.token)

    def post(self, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        return self._transport.request("POST", path, payload=payload or {}, token=self.token)

    def upkeep(self) -> float | None:
        """Renew or replace the token; seconds until the next upkeep, ``None``: never."""
        with mapped(self.settings.addr, action="renew the token"):
            ttl = self._renewed_ttl()
        return max(1.0, ttl * RENEW_AT) if ttl else None

    def release(self) -> bool:
        """Revoke the token envwrap logged in for (AppRole, Kubernetes); ``True`` if it did."""
        if not self.can_login:
            return False
        with self._lock:
            token = self._token
        if token is None:
            return False
        with mapped(self.settings.addr, action="revoke the token"):
            self._transport.request("POST", "auth/token/revoke-self", payload={}, token=token)
        with self._lock:
            if self._token == token:
                self._token = None
        return True

    def close(self) -> None:
        self._transport.close()
        with self._lock:
            self._token = None

    @property
    def can_login(self) -> bool:
        """Whether envwrap logs in itself (and so may log in again, and revoke its token)."""
        return self.settings.auth in ("approle", "kubernetes")

    def _renewed_ttl(self) -> float | None:
        """The token's TTL after renewal or a new login; ``None`` when it never expires
        or can neither be renewed nor replaced."""
        info = section(body(self.get("auth/token/lookup-self")), "data")
        ttl = whole(info, "ttl")
        if ttl == 0 and not info.get("expire_time"):
            return None  # a token that never expires (a root token)
        if info.get("renewable"):
            try:
                auth = section(body(self.post("auth/token/renew-self")), "auth")
                renewed = whole(auth, "lease_duration")
            except StatusError:
                if not self.can_login:
                    raise
                renewed = 0
            # a renewal capped by the token's max TTL no longer extends it (the
            # slack absorbs TTLs rounded to whole seconds); then log in afresh
            if renewed > ttl + RENEWAL_SLACK or not self.can_login:
                return float(renewed) if renewed else None
        if not self.can_login:
            return None
        with self._lock:
            self._token, ttl_after = self._login()
        return ttl_after

    def _login(self) -> tuple[str, float | None]:
        """A token to use, and its TTL in seconds (``None``: no expiry, or not known)."""
        settings = self.settings
        if settings.auth == "token":
            if not settings.token:
                raise ConfigError(
                    "no Vault token: set VAULT_TOKEN, or log in with `bao login` / "
                    "`vault login` (~/.vault-token), or set VAULT_ROLE_ID (AppRole) or "
                    "VAULT_K8S_ROLE (Kubernetes) for envwrap to log in"
                )
            return header_value(settings.token, "the Vault token"), None
        if settings.auth == "approle":
            mount, payload = settings.approle_mount, _approle_payload(settings)
        else:
            mount, payload = settings.k8s_mount, _kubernetes_payload(settings)
        with mapped(settings.addr, action=f"log in with {settings.auth}"):
            response = self._transport.request("POST", f"auth/{quoted(mount)}/login",
                                               payload=payload)
            auth = section(body(response), "auth")
            token = auth.get("client_token")
            if not isinstance(token, str) or not token or not is_header_safe(token):
                raise UnexpectedReply("no usable client_token in the login reply")
            ttl = whole(auth, "lease_duration")
        return token, (float(ttl) if ttl else None)


def _approle_payload(settings: Settings) -> dict[str, str]:
    if not settings.role_id:
        raise ConfigError("AppRole login needs VAULT_ROLE_ID")
    payload = {"role_id": settings.role_id}
    secret_id = settings.secret_id
    if secret_id is None and settings.secret_id_file:
        secret_id = _read_credential_file(settings.secret_id_file, "VAULT_SECRET_ID_FILE")
    if secret_id:
        payload["secret_id"] = secret_id
    return payload


def _kubernetes_payload(settings: Settings) -> dict[str, str]:
    if not settings.k8s_role:
        raise ConfigError("Kubernetes login needs VAULT_K8S_ROLE")
    jwt = _read_credential_file(settings.k8s_token_file, "VAULT_K8S_TOKEN_FILE")
    return {"role": settings.k8s_role, "jwt": jwt}


def _read_credential_file(path: str, setting: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AuthError(
            f"cannot read the credential file {path!r} ({exc.strerror or type(exc).__name__})",
            hint=f"check {setting} and the file's permissions",
        ) from None
    if not text:
        raise AuthError(f"the credential file {path!r} is empty", hint=f"check {setting}")
    return text
