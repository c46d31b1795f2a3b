"""Where the transport's exceptions and Vault's error replies become envwrap's: the one mapping.

No such secret, key or version -> :class:`NotFoundError` (65); bad token,
denied -> :class:`AuthError` (77); unreachable, 5xx, 412, 429, a reply that is
not what Vault sends -> :class:`StoreUnavailableError` (retried by the
resolver). Messages never quote a response body or a value.

Only the transport's exceptions are mapped (:data:`MAPPED`). Any other
exception (``KeyError``, ``TypeError``...) is a bug in envwrap and propagates
as one.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from envwrap.backends.vault.settings import safe_address
from envwrap.errors import (
    AuthError,
    ConfigError,
    EnvwrapError,
    NotFoundError,
    ReplyRefusedError,
    StoreUnavailableError,
)

__all__ = ["MAPPED", "STATUS_ERRORS", "Denied", "Missing", "ReplyRefused", "StatusError",
           "UnexpectedReply", "map_error", "mapped"]


class StatusError(Exception):
    """A reply with an error status (4xx, 5xx). ``errors`` is Vault's list of
    error strings, for decisions only: it may echo what the request sent."""

    def __init__(self, status: int, errors: tuple[str, ...] = ()) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.errors = errors

    @staticmethod
    def of(status: int, errors: tuple[str, ...] = ()) -> StatusError:
        """The error for ``status``: :class:`Missing` (404), :class:`Denied` (403), else
        a plain :class:`StatusError`."""
        kind = {404: Missing, 403: Denied}.get(status, StatusError)
        return kind(status, errors)


class Missing(StatusError):
    """404: no such path, secret or version (or a version deleted)."""


class Denied(StatusError):
    """403: the token may not do this (or is no longer valid)."""


class UnexpectedReply(Exception):
    """A reply that is not what Vault sends: a proxy's page, another service, a cut body."""


class ReplyRefused(Exception):
    """A reply envwrap will not follow or read: a redirect to another origin, a body
    too large. Its text names addresses only; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


#: the exceptions :func:`map_error` maps: Vault's error replies, a reply that is
#: not Vault's, and the transport's (``OSError`` covers sockets, TLS, timeouts)
MAPPED: tuple[type[BaseException], ...] = (
    StatusError,
    UnexpectedReply,
    ReplyRefused,
    http.client.HTTPException,
    OSError,
)

_TRANSIENT_HINT = "Vault may be sealed, restarting or overloaded; envwrap retries"
_OTHER_STATUS = (
    StoreUnavailableError,
    "Vault answered with an unexpected HTTP status",
    _TRANSIENT_HINT,
)
#: an error status -> (envwrap error class, message, hint); any other is _OTHER_STATUS
STATUS_ERRORS: dict[int, tuple[type[EnvwrapError], str, str | None]] = {
    400: (
        NotFoundError,
        "Vault rejected the request as invalid (HTTP 400)",
        "check the path and its parameters",
    ),
    401: (
        AuthError,
        "Vault refused the credentials (HTTP 401)",
        "check VAULT_TOKEN or the login settings",
    ),
    403: (
        AuthError,
        "permission denied (HTTP 403)",
        "the token is invalid or expired, or its policy does not allow this path",
    ),
    404: (NotFoundError, "nothing at this path (HTTP 404)", "check the mount and path"),
    405: (
        ConfigError,
        "the operation is not supported by this Vault server (HTTP 405)",
        None,
    ),
    412: (
        StoreUnavailableError,
        "Vault is not yet consistent (HTTP 412)",
        _TRANSIENT_HINT,
    ),
    429: (
        StoreUnavailableError,
        "Vault is throttling requests (HTTP 429)",
        _TRANSIENT_HINT,
    ),
    500: (
        StoreUnavailableError,
        "Vault had an internal error (HTTP 500)",
        _TRANSIENT_HINT,
    ),
    501: (
        StoreUnavailableError,
        "Vault is not initialized (HTTP 501)",
        _TRANSIENT_HINT,
    ),
    502: (
        StoreUnavailableError,
        "a gateway in front of Vault failed (HTTP 502)",
        _TRANSIENT_HINT,
    ),
    503: (
        StoreUnavailableError,
        "Vault is sealed or unavailable (HTTP 503)",
        _TRANSIENT_HINT,
    ),
}


@contextmanager
def mapped(addr: str, action: str = "read the secret") -> Iterator[None]:
    """Raise the SDK's and the transport's exceptions as envwrap errors, unchained
    (their text may quote the response); let every other exception through."""
    try:
        yield
    except MAPPED as exc:
        raise map_error(exc, addr, action=action) from None


def map_error(exc: BaseException, addr: str, *, action: str = "read the secret") -> EnvwrapError:
    """The envwrap error for one of the :data:`MAPPED` exceptions.

    The message names the kind of failure and never quotes Vault's reply
    (it may echo request data). A login that Vault rejects (400, 401, 403,
    404) is an :class:`AuthError`. Any other exception is a bug and raises
    :class:`TypeError`.
    """
    where = safe_address(addr)
    if isinstance(exc, StatusError):
        return _status_error(exc.status, action)
    if isinstance(exc, ReplyRefused):
        return ReplyRefusedError(f"cannot {action}: {exc}", hint=exc.hint)
    if isinstance(exc, UnexpectedReply | http.client.BadStatusLine | http.client.LineTooLong) \
            and not isinstance(exc, http.client.RemoteDisconnected):
        return StoreUnavailableError(
            f"cannot {action}: unexpected response from {where}",
            hint="is VAULT_ADDR a Vault server, not a proxy or web page?",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConfigError(
            f"cannot {action}: the TLS certificate of {where} could not be verified",
            hint="set VAULT_CACERT or VAULT_CAPATH to the CA that signed it",
        )
    if isinstance(exc, TimeoutError):
        return StoreUnavailableError(f"cannot {action}: {where} did not answer in time")
    if isinstance(exc, OSError | http.client.RemoteDisconnected):
        # refused, reset, unreachable, a name that does not resolve, a TLS failure
        return StoreUnavailableError(
            f"cannot {action}: cannot connect to Vault at {where}",
            hint="check VAULT_ADDR and that the server is running",
        )
    if isinstance(exc, http.client.HTTPException):
        return StoreUnavailableError(f"cannot {action}: the request to {where} failed "
                                     f"({type(exc).__name__})")
    raise TypeError(f"not a transport exception: {type(exc).__name__}") from exc


def _status_error(status: int, action: str) -> EnvwrapError:
    kind, message, hint = STATUS_ERRORS.get(status, _OTHER_STATUS)
    if action.startswith("log in") and kind in (NotFoundError, AuthError):
        return AuthError(
            f"cannot {action}: Vault refused the login ({message})",
            hint="check the role, the secret id or token file, and the auth mount",
        )
    return kind(f"cannot {action}: {message}", hint=hint)
