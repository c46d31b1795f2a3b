"""Where botocore's errors become envwrap's: the one place that maps them.

A message names the service and the AWS error code or exception class, never
the response body or anything it echoes (its Message may quote request data).
Imports botocore, so only the AWS backends import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import botocore.exceptions as bx
from botocore.parsers import ResponseParserError

from envwrap.errors import (
    AuthError,
    ConfigError,
    EnvwrapError,
    NotFoundError,
    ReferenceSyntaxError,
    StoreUnavailableError,
)

__all__ = ["SDK_ERRORS", "aws_errors", "error_family", "foreign_reply", "map_error",
           "map_error_code"]

#: family -> (error class, what happened, hint). A message never quotes the
#: response (its Message may echo request data); only the error code is shown.
_FAMILIES: dict[str, tuple[type[EnvwrapError], str, str | None]] = {
    "not_found": (
        NotFoundError,
        "no such secret, parameter or version (or it is scheduled for deletion)",
        "check the name, the region and ?version-stage= / ?version-id=",
    ),
    "denied": (
        AuthError,
        "permission denied",
        "the AWS identity needs secretsmanager:GetSecretValue / ssm:GetParameters "
        "on this resource",
    ),
    "kms": (
        AuthError,
        "the value cannot be decrypted with its KMS key",
        "the AWS identity needs kms:Decrypt on the secret's key",
    ),
    "credentials": (
        AuthError,
        "the AWS credentials were rejected",
        "check AWS_PROFILE / AWS_ACCESS_KEY_ID, the session token's expiry and the clock",
    ),
    "no_credentials": (
        AuthError,
        "no usable AWS credentials",
        "set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "or run with an instance, task or pod role",
    ),
    "throttled": (StoreUnavailableError, "throttled by AWS", None),
    "unavailable": (StoreUnavailableError, "AWS is unreachable or failing", None),
    "invalid": (
        ReferenceSyntaxError,
        "AWS rejected the request as malformed",
        "check the name and ?version-id= of the reference",
    ),
    "config": (ConfigError, "the AWS configuration is not usable", None),
    "rejected": (ConfigError, "AWS refused the request", None),
    "foreign": (StoreUnavailableError, "the endpoint's reply is not an AWS reply",
                "is AWS_ENDPOINT_URL an AWS endpoint, not a proxy or web page?"),
}

#: what botocore raises for a reply it cannot read (not UTF-8, not its protocol)
_UNREADABLE: tuple[type[BaseException], ...] = (UnicodeDecodeError, ResponseParserError)
#: every exception a call through boto3 raises for the store's sake, not envwrap's
SDK_ERRORS: tuple[type[BaseException], ...] = (bx.ClientError, bx.BotoCoreError, *_UNREADABLE)

#: AWS error codes (the response's ``Error.Code``) -> family
_CODES: dict[str, str] = {
    **dict.fromkeys(
        (
            "ResourceNotFoundException",
            "ParameterNotFound",
            "ParameterVersionNotFound",
            "ParameterVersionLabelNotFound",
            # Secrets Manager: the secret is scheduled for deletion (and a few
            # other "wrong state" cases); nothing can be read from it
            "InvalidRequestException",
        ),
        "not_found",
    ),
    **dict.fromkeys(
        ("AccessDeniedException", "AccessDenied", "NotAuthorized", "UnauthorizedOperation"),
        "denied",
    ),
    # Secrets Manager DecryptionFailure and SSM InvalidKeyId: KMS refused to
    # decrypt, almost always a missing kms:Decrypt grant -- a permission, so 77
    **dict.fromkeys(("DecryptionFailure", "InvalidKeyId", "KMSAccessDeniedException"), "kms"),
    **dict.fromkeys(
        (
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "MissingAuthenticationToken",
            "ExpiredTokenException",
            "ExpiredToken",
            "RequestExpired",
        ),
        "credentials",
    ),
    **dict.fromkeys(
        (
            "ThrottlingException",
            "Throttling",
            "ThrottledException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
            "SlowDown",
        ),
        "throttled",
    ),
    **dict.fromkeys(
        (
            "InternalServiceError",
            "InternalServiceErrorException",
            "InternalFailure",
            "InternalServerError",
            "ServiceUnavailable",
            "ServiceUnavailableException",
            "RequestTimeout",
            "RequestTimeoutException",
        ),
        "unavailable",
    ),
    **dict.fromkeys(
        (
            "ValidationException",
            "InvalidParameterException",
            "InvalidParameterValue",
            "InvalidParameterCombination",
        ),
        "invalid",
    ),
}

#: botocore's own exceptions (raised before or instead of a response) -> family,
#: checked in order with isinstance; anything else is "config".
_SDK_EXCEPTIONS: tuple[tuple[type[BaseException], str], ...] = (
    # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError, SSLError
    (bx.ConnectionError, "unavailable"),
    # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    (bx.HTTPClientError, "unavailable"),
    (bx.IncompleteReadError, "unavailable"),
    (bx.CapacityNotAvailableError, "throttled"),  # botocore's own retry quota ran out
    (bx.NoCredentialsError, "no_credentials"),
    (bx.PartialCredentialsError, "no_credentials"),
    (bx.CredentialRetrievalError, "no_credentials"),
    (bx.MetadataRetrievalError, "no_credentials"),
    (bx.NoAuthTokenError, "no_credentials"),
    (bx.TokenRetrievalError, "no_credentials"),
    (bx.SSOError, "no_credentials"),
    (bx.LoginError, "no_credentials"),
    (bx.RefreshWithMFAUnsupportedError, "no_credentials"),
    (bx.UnknownCredentialError, "no_credentials"),
    (bx.ParamValidationError, "invalid"),
    (bx.ValidationError, "invalid"),
)


def error_family(exc: BaseException) -> str:
    """The family of a botocore exception: a key of the family table."""
    if isinstance(exc, _UNREADABLE):
        return "foreign"
    if isinstance(exc, bx.ClientError):
        code = _error_code(exc)
        family = _CODES.get(code)
        if family is not None:
            return family
        return _family_of_status(_http_status(exc))
    for cls, family in _SDK_EXCEPTIONS:
        if isinstance(exc, cls):
            return family
    return "config"


def map_error(exc: BaseException, service: str) -> EnvwrapError:
    """Turn any botocore exception into envwrap's error: the one place that does.

    The message names the service and the AWS error code or exception class,
    never the response body or anything it echoes.
    """
    family = error_family(exc)
    cls, what, hint = _FAMILIES[family]
    if isinstance(exc, bx.ClientError):
        status = _http_status(exc)
        detail = _error_code(exc) or "no error code"
        if status:
            detail = f"{detail}, HTTP {status}"
    else:
        detail = type(exc).__name__
    if isinstance(exc, bx.NoRegionError):
        hint = "set AWS_REGION or add ?region= to the reference"
    return cls(f"{service}: {what} ({detail})", hint=hint)


def map_error_code(code: str, service: str) -> EnvwrapError:
    """:func:`map_error` for an error a batch response reports per item."""
    return map_error(bx.ClientError({"Error": {"Code": code}}, "batch"), service)


@contextmanager
def aws_errors(service: str) -> Iterator[None]:
    """Raise botocore's exceptions as envwrap errors, without chaining them
    (their text may quote the response)."""
    try:
        yield
    except SDK_ERRORS as exc:
        raise map_error(exc, service) from None


def foreign_reply(service: str, what: str) -> StoreUnavailableError:
    """The error for a reply that parses but is not what the AWS service sends
    (a proxy's JSON, another service): unreachable in effect, and retried."""
    _, message, hint = _FAMILIES["foreign"]
    return StoreUnavailableError(f"{service}: {message} ({what})", hint=hint)


def _error_code(exc: bx.ClientError) -> str:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    # keep only what an error code is made of: a misbehaving endpoint could put
    # anything in this field
    return "".join(c for c in code if c.isascii() and (c.isalnum() or c in "._-"))[:64]


def _http_status(exc: bx.ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status if isinstance(status, int) else 0


def _family_of_status(status: int) -> str:
    # An unknown code is judged by its HTTP status. moto, for one, answers a
    # denied JSON-protocol call with an XML body whose code botocore reads as "403".
    if status in (401, 403):
        return "denied"
    if status == 404:
        return "not_found"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "unavailable"
    return "rejected"
