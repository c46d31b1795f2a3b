"""The error tree. Every error carries its exit code (docs/reference.md) and names the
variable and the reference it concerns -- never a secret value.

Backends raise these without a variable (they do not know which variables use a
secret); the resolver adds the variable with :meth:`EnvwrapError.about`.
Only ``cli`` turns an error into a message and an exit code.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BackendMissingError",
    "CommandError",
    "ConfigError",
    "EnvwrapError",
    "InvalidValueError",
    "NotFoundError",
    "ReferenceSyntaxError",
    "ReplyRefusedError",
    "StoreUnavailableError",
    "UsageError",
]

EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_NOPERM = 77
EX_CONFIG = 78
EX_CANNOT_EXECUTE = 126
EX_NOT_FOUND = 127


class EnvwrapError(Exception):
    """Base class. ``str(err)`` is the one line shown to the user."""

    exit_code = 1
    #: whether a retry may succeed (connection refused, 5xx, throttling)
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        variable: str | None = None,
        reference: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.variable = variable
        self.reference = reference
        self.hint = hint

    def about(self, *, variable: str | None = None, reference: str | None = None) -> EnvwrapError:
        """Fill in the variable and reference where they are not known yet."""
        if self.variable is None and variable is not None:
            self.variable = variable
        if self.reference is None and reference is not None:
            self.reference = reference
        return self

    def __str__(self) -> str:
        where = []
        if self.variable is not None:
            where.append(self.variable)
        if self.reference is not None:
            where.append(self.reference)
        text = f"{': '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return text


class UsageError(EnvwrapError):
    """Bad command line."""

    exit_code = EX_USAGE


class ReferenceSyntaxError(EnvwrapError):
    """A value looks like a reference but does not follow the grammar."""

    exit_code = EX_USAGE


class NotFoundError(EnvwrapError):
    """The reference points at nothing: no such secret, key or version."""

    exit_code = EX_DATAERR


class InvalidValueError(EnvwrapError):
    """A resolved value or imported name cannot be passed to the program."""

    exit_code = EX_DATAERR


class StoreUnavailableError(EnvwrapError):
    """The store cannot be reached (connection, 5xx, throttling); retried."""

    exit_code = EX_UNAVAILABLE
    retryable = True


class ReplyRefusedError(StoreUnavailableError):
    """The store answered with what envwrap will not follow or read: a redirect to
    another address, a reply too large. Not retried: it would answer the same."""

    retryable = False


class AuthError(EnvwrapError):
    """Authentication failed or permission was denied."""

    exit_code = EX_NOPERM


class ConfigError(EnvwrapError):
    """Bad configuration: a .env file that does not parse, a bad option value."""

    exit_code = EX_CONFIG


class BackendMissingError(ConfigError):
    """No backend for a scheme, or its optional dependencies are not installed."""


class CommandError(EnvwrapError):
    """The command cannot be executed (126) or is not found (127)."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
