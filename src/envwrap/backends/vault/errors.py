"""Where hvac's, requests' and urllib3's exceptions become envwrap's: the one mapping.

No such secret, key or version -> :class:`NotFoundError` (65); bad token,
denied -> :class:`AuthError` (77); unreachable, 5xx, 412, 429, a reply that is
not what Vault sends -> :class:`StoreUnavailableError` (retried by the
resolver). Messages never quote a response body or a value.

Only exceptions of the SDK and the transport are mapped. Any other exception
(``KeyError``, ``TypeError``...) is a bug in envwrap and propagates as one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import hvac.exceptions
import requests
import urllib3.exceptions

from envwrap.backends.vault.settings import safe_address
from envwrap.errors import (
    AuthError,
    ConfigError,
    EnvwrapError,
    NotFoundError,
    ReplyRefusedError,
    StoreUnavailableError,
)

__all__ = ["HVAC_ERRORS", "MAPPED", "ReplyRefused", "UnexpectedReply", "map_error", "mapped"]


class UnexpectedReply(Exception):
    """A reply that is not what Vault sends: a proxy's page, another service, a cut body."""


class ReplyRefused(Exception):
    """A reply envwrap will not follow or read: a redirect to another origin, a body
    too large. Its text names addresses only; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


#: the exceptions :func:`map_error` maps: hvac's, the transport's, and a reply
#: that is not Vault's; ``OSError`` is a connection failing below urllib3
MAPPED: tuple[type[BaseException], ...] = (
    hvac.exceptions.VaultError,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    UnexpectedReply,
    ReplyRefused,
    OSError,
)

_TRANSIENT_HINT = "Vault may be sealed, restarting or overloaded; envwrap retries"
#: every hvac exception class -> (envwrap error class, message, hint); a test checks
#: that each class hvac defines is listed here, so a new one forces a decision
HVAC_ERRORS: dict[str, tuple[type[EnvwrapError], str, str | None]] = {
    "InvalidRequest": (
        NotFoundError,
        "Vault rejected the request as invalid (HTTP 400)",
        "check the path and its parameters",
    ),
    "Unauthorized": (
        AuthError,
        "Vault refused the credentials (HTTP 401)",
        "check VAULT_TOKEN or the login settings",
    ),
    "Forbidden": (
        AuthError,
        "permission denied (HTTP 403)",
        "the token is invalid or expired, or its policy does not allow this path",
    ),
    "InvalidPath": (NotFoundError, "nothing at this path (HTTP 404)", "check the mount and path"),
    "UnsupportedOperation": (
        ConfigError,
        "the operation is not supported by this Vault server",
        None,
    ),
    "PreconditionFailed": (
        StoreUnavailableError,
        "Vault is not yet consistent (HTTP 412)",
        _TRANSIENT_HINT,
    ),
    "RateLimitExceeded": (
        StoreUnavailableError,
        "Vault is throttling requests (HTTP 429)",
        _TRANSIENT_HINT,
    ),
    "InternalServerError": (
        StoreUnavailableError,
        "Vault had an internal error (HTTP 500)",
        _TRANSIENT_HINT,
    ),
    "VaultNotInitialized": (
        StoreUnavailableError,
        "Vault is not initialized (HTTP 501)",
        _TRANSIENT_HINT,
    ),
    "BadGateway": (
        StoreUnavailableError,
        "a gateway in front of Vault failed (HTTP 502)",
        _TRANSIENT_HINT,
    ),
    "VaultDown": (
        StoreUnavailableError,
        "Vault is sealed or unavailable (HTTP 503)",
        _TRANSIENT_HINT,
    ),
    "UnexpectedError": (
        StoreUnavailableError,
        "Vault answered with an unexpected HTTP status",
        _TRANSIENT_HINT,
    ),
    "ParamValidationError": (ConfigError, "invalid parameters for a Vault request", None),
    "VaultError": (StoreUnavailableError, "Vault reported an error", _TRANSIENT_HINT),
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

    The message names the kind of failure and never quotes hvac's message or
    the response (either may echo request data). A login that Vault rejects
    (400, 401, 403, 404) is an :class:`AuthError`. Any other exception is a
    bug and raises :class:`TypeError`.
    """
    where = safe_address(addr)
    if isinstance(exc, hvac.exceptions.VaultError):
        return _vault_error(exc, action)
    if isinstance(exc, ReplyRefused):
        return ReplyRefusedError(f"cannot {action}: {exc}", hint=exc.hint)
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return ReplyRefusedError(
            f"cannot {action}: {where} redirected more than once",
            hint="envwrap follows one redirect from Vault; point VAULT_ADDR at the server itself",
        )
    if isinstance(exc, UnexpectedReply):
        return StoreUnavailableError(
            f"cannot {action}: unexpected response from {where}",
            hint="is VAULT_ADDR a Vault server, not a proxy or web page?",
        )
    # requests' exceptions, and urllib3's own from the read path, which are
    # mapped as requests' HTTPAdapter would translate them
    u3 = urllib3.exceptions
    if isinstance(exc, u3.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if (isinstance(exc, requests.exceptions.SSLError | u3.SSLError)
            and "CERTIFICATE_VERIFY" in str(exc)):
        return ConfigError(
            f"cannot {action}: the TLS certificate of {where} could not be verified",
            hint="set VAULT_CACERT or VAULT_CAPATH to the CA that signed it",
        )
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema
                  | requests.exceptions.InvalidSchema | u3.LocationValueError):
        return ConfigError(
            f"VAULT_ADDR {where!r} is not a usable URL", hint="write https://HOST:PORT"
        )
    if (isinstance(exc, requests.exceptions.Timeout | u3.TimeoutError | TimeoutError)
            and not isinstance(exc, u3.NewConnectionError)):
        return StoreUnavailableError(f"cannot {action}: {where} did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError | u3.NewConnectionError
                  | u3.ProtocolError | u3.ProxyError | u3.SSLError | u3.PoolError
                  | u3.IncompleteRead):
        return StoreUnavailableError(
            f"cannot {action}: cannot connect to Vault at {where}",
            hint="check VAULT_ADDR and that the server is running",
        )
    if isinstance(exc, requests.RequestException | u3.HTTPError):
        return StoreUnavailableError(f"cannot {action}: the request to {where} failed "
                                     f"({type(exc).__name__})")
    if isinstance(exc, OSError):  # a socket failing below urllib3
        return StoreUnavailableError(
            f"cannot {action}: cannot connect to Vault at {where}",
            hint="check VAULT_ADDR and that the server is running",
        )
    raise TypeError(f"not an SDK or transport exception: {type(exc).__name__}") from exc


def _vault_error(exc: hvac.exceptions.VaultError, action: str) -> EnvwrapError:
    name = next(
        (cls.__name__ for cls in type(exc).__mro__ if cls.__name__ in HVAC_ERRORS),
        "VaultError",
    )
    kind, message, hint = HVAC_ERRORS[name]
    if action.startswith("log in") and kind in (NotFoundError, AuthError):
        return AuthError(
            f"cannot {action}: Vault refused the login ({message})",
            hint="check the role, the secret id or token file, and the auth mount",
        )
    return kind(f"cannot {action}: {message}", hint=hint)
