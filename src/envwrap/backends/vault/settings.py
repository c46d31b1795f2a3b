"""Vault's connection and login settings, read once from the merged environment.

The Vault CLI's variables: ``VAULT_ADDR`` (required: the CLI's default,
``https://127.0.0.1:8200``, is a local dev server at best, and 30 s of retries
against it explain nothing),
``VAULT_NAMESPACE``, ``VAULT_CACERT`` / ``VAULT_CAPATH``, ``VAULT_CLIENT_CERT`` +
``VAULT_CLIENT_KEY``, ``VAULT_SKIP_VERIFY``, ``VAULT_CLIENT_TIMEOUT`` (seconds
or ``30s``/``2m``; default 30s), ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``
(never for a loopback address). A plain ``http://`` address that is not
loopback is used, with a warning.

The login method is ``VAULT_AUTH_METHOD`` (``token``, ``approle``,
``kubernetes``) or, when it is unset, the first of these that is present:
``VAULT_TOKEN``; ``VAULT_ROLE_ID`` (AppRole, with ``VAULT_SECRET_ID`` or
``VAULT_SECRET_ID_FILE``, ``VAULT_APPROLE_MOUNT``); ``VAULT_K8S_ROLE``
(Kubernetes, with ``VAULT_K8S_TOKEN_FILE``, ``VAULT_K8S_MOUNT``); the token in
``~/.vault-token`` (``HOME`` of the environment).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from envwrap import log
from envwrap.errors import ConfigError

__all__ = ["Settings", "is_loopback", "read_settings", "safe_address", "warn_if_plain_http"]

DEFAULT_K8S_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_READ_TIMEOUT = 30.0
AUTH_METHODS = ("token", "approle", "kubernetes")
_TRUE = frozenset({"1", "t", "true"})  # Go's strconv.ParseBool, as the Vault CLI reads it
_FALSE = frozenset({"0", "f", "false", ""})


class Settings(NamedTuple):
    """Connection and login settings, read once from the environment."""

    addr: str
    namespace: str | None
    verify: bool | str
    cert: tuple[str, str] | None
    timeout: float
    proxies: dict[str, str]
    auth: str
    token: str | None
    role_id: str | None
    secret_id: str | None
    secret_id_file: str | None
    approle_mount: str
    k8s_role: str | None
    k8s_token_file: str
    k8s_mount: str


def read_settings(environ: Mapping[str, str]) -> Settings:
    """Connection and login settings from ``environ``; :class:`ConfigError` when invalid."""
    addr = (environ.get("VAULT_ADDR") or "").strip().rstrip("/")
    if not addr:
        raise ConfigError(
            "VAULT_ADDR is not set: envwrap does not know where Vault is",
            hint="set VAULT_ADDR=https://HOST:8200 in the environment or in .env; "
            "a local dev server is http://127.0.0.1:8200",
        )
    try:
        parts = urlsplit(addr)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(
            f"VAULT_ADDR {safe_address(addr)!r} is not an http:// or https:// address",
            hint="write VAULT_ADDR=https://HOST:8200",
        )
    return Settings(
        addr=addr,
        namespace=environ.get("VAULT_NAMESPACE") or None,
        verify=_verify(environ),
        cert=_client_cert(environ),
        timeout=_timeout(environ.get("VAULT_CLIENT_TIMEOUT")),
        proxies=_proxies(environ, parts.scheme, parts.hostname or ""),
        auth=_auth_method(environ),
        token=environ.get("VAULT_TOKEN") or _token_file(environ),
        role_id=environ.get("VAULT_ROLE_ID") or None,
        secret_id=environ.get("VAULT_SECRET_ID") or None,
        secret_id_file=environ.get("VAULT_SECRET_ID_FILE") or None,
        approle_mount=(environ.get("VAULT_APPROLE_MOUNT") or "approle").strip("/"),
        k8s_role=environ.get("VAULT_K8S_ROLE") or None,
        k8s_token_file=environ.get("VAULT_K8S_TOKEN_FILE") or DEFAULT_K8S_TOKEN_FILE,
        k8s_mount=(environ.get("VAULT_K8S_MOUNT") or "kubernetes").strip("/"),
    )


def _auth_method(environ: Mapping[str, str]) -> str:
    chosen = (environ.get("VAULT_AUTH_METHOD") or "").strip().lower()
    if chosen:
        if chosen not in AUTH_METHODS:
            raise ConfigError(
                f"VAULT_AUTH_METHOD={chosen!r} is not supported",
                hint=f"use one of: {', '.join(AUTH_METHODS)}",
            )
        return chosen
    if environ.get("VAULT_TOKEN"):
        return "token"
    if environ.get("VAULT_ROLE_ID"):
        return "approle"
    if environ.get("VAULT_K8S_ROLE"):
        return "kubernetes"
    return "token"


def _token_file(environ: Mapping[str, str]) -> str | None:
    home = environ.get("HOME")
    path = Path(home) / ".vault-token" if home else Path("~/.vault-token").expanduser()
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _verify(environ: Mapping[str, str]) -> bool | str:
    skip = (environ.get("VAULT_SKIP_VERIFY") or "").strip().lower()
    if skip not in _TRUE | _FALSE:
        raise ConfigError(
            f"VAULT_SKIP_VERIFY={skip!r} is not a boolean", hint="use true or false"
        )
    if skip in _TRUE:
        return False
    # VAULT_CACERT takes precedence over VAULT_CAPATH, as in the Vault CLI
    for name in ("VAULT_CACERT", "VAULT_CAPATH"):
        path = environ.get(name)
        if path:
            if not Path(path).exists():
                raise ConfigError(f"{name}={path!r} does not exist", hint="point it at a PEM file")
            return path
    return True


def _client_cert(environ: Mapping[str, str]) -> tuple[str, str] | None:
    cert, key = environ.get("VAULT_CLIENT_CERT"), environ.get("VAULT_CLIENT_KEY")
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError(
            "VAULT_CLIENT_CERT and VAULT_CLIENT_KEY must be set together",
            hint="set both to PEM files, or neither",
        )
    for name, path in (("VAULT_CLIENT_CERT", cert), ("VAULT_CLIENT_KEY", key)):
        if not Path(path).is_file():
            raise ConfigError(f"{name}={path!r} is not a file", hint="point it at a PEM file")
    return cert, key


def _timeout(text: str | None) -> float:
    if not text:
        return DEFAULT_READ_TIMEOUT
    raw = text.strip().lower()
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0}
    unit = next((u for u in ("ms", "s", "m") if raw.endswith(u)), "")
    try:
        value = float(raw[: -len(unit)] if unit else raw) * scale.get(unit, 1.0)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(
            f"VAULT_CLIENT_TIMEOUT={text!r} is not a duration", hint="write e.g. 30s or 30"
        )
    return value


def _proxies(environ: Mapping[str, str], scheme: str, host: str) -> dict[str, str]:
    """Proxy settings from ``environ`` (requests would read the process environment)."""
    proxy = environ.get(f"{scheme.upper()}_PROXY") or environ.get(f"{scheme}_proxy")
    if not proxy or is_loopback(host):
        return {}
    no_proxy = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    for entry in (e.strip().lstrip(".").lower() for e in no_proxy.split(",")):
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return {}
    return {scheme: proxy}


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_address(addr: str) -> str:
    """The address without any user:password part, for messages."""
    try:
        parts = urlsplit(addr)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        parts, port = None, ""
    if parts is None or parts.hostname is None:
        scheme, slashes, rest = addr[:200].rpartition("://")
        text = scheme + slashes + rest.rpartition("@")[2]  # never a user:password
        return "".join(c if c.isprintable() else "?" for c in text)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}"


def warn_if_plain_http(addr: str) -> None:
    parts = urlsplit(addr)
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        log.warning(
            "VAULT_ADDR uses plain http:// to another machine: the token and the secrets "
            "cross the network unencrypted; use https://",
            address=safe_address(addr),
        )
