"""Every botocore error family is mapped, in one place, to the right exit code,
and no message quotes the response."""

from __future__ import annotations

import inspect
from typing import Any

import botocore.exceptions as bx
import pytest

from envwrap.backends import _aws_errors
from envwrap.backends._aws_errors import error_family, map_error, map_error_code
from envwrap.errors import (
    AuthError,
    ConfigError,
    EnvwrapError,
    NotFoundError,
    ReferenceSyntaxError,
    StoreUnavailableError,
)

LEAK = "LEAKED-response-text-s3cr3t"

EXPECTED = {
    "not_found": (NotFoundError, 65),
    "denied": (AuthError, 77),
    "kms": (AuthError, 77),
    "credentials": (AuthError, 77),
    "no_credentials": (AuthError, 77),
    "throttled": (StoreUnavailableError, 69),
    "unavailable": (StoreUnavailableError, 69),
    "invalid": (ReferenceSyntaxError, 64),
    "config": (ConfigError, 78),
    "rejected": (ConfigError, 78),
    "foreign": (StoreUnavailableError, 69),
}


def client_error(code: str, status: int = 400) -> bx.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"the secret {LEAK} is wrong"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bx.ClientError(response, "GetSecretValue")


def check(err: EnvwrapError, family: str) -> None:
    cls, code = EXPECTED[family]
    assert type(err) is cls
    assert err.exit_code == code
    assert err.retryable is (code == 69)
    assert LEAK not in str(err)


def test_every_family_has_an_expectation() -> None:
    assert set(_aws_errors._FAMILIES) == set(EXPECTED)


@pytest.mark.parametrize(("code", "family"), sorted(_aws_errors._CODES.items()))
def test_every_aws_error_code(code: str, family: str) -> None:
    exc = client_error(code)
    assert error_family(exc) == family
    err = map_error(exc, "AWS Secrets Manager")
    check(err, family)
    assert code in str(err) and "AWS Secrets Manager" in str(err)
    check(map_error_code(code, "AWS Secrets Manager"), family)


@pytest.mark.parametrize(
    ("named", "required"),
    [
        ("ResourceNotFoundException", "not_found"),
        ("ParameterNotFound", "not_found"),
        ("ParameterVersionNotFound", "not_found"),
        ("AccessDeniedException", "denied"),
        ("UnrecognizedClientException", "credentials"),
        ("InvalidSignatureException", "credentials"),
        ("ExpiredTokenException", "credentials"),
        ("ThrottlingException", "throttled"),
        ("InternalServiceError", "unavailable"),
        ("DecryptionFailure", "kms"),
    ],
)
def test_the_codes_the_issue_names(named: str, required: str) -> None:
    assert _aws_errors._CODES[named] == required


@pytest.mark.parametrize(
    ("status", "family"),
    [(401, "denied"), (403, "denied"), (404, "not_found"), (429, "throttled"),
     (500, "unavailable"), (502, "unavailable"), (503, "unavailable"), (400, "rejected")],
)
def test_unknown_codes_by_http_status(status: int, family: str) -> None:
    exc = client_error("SomethingNew", status)
    assert error_family(exc) == family
    check(map_error(exc, "AWS"), family)


def test_hostile_error_code_is_sanitised() -> None:
    err = map_error(client_error(f"Bad {LEAK}\n<xml>" * 10), "AWS")
    assert "\n" not in str(err) and "<" not in str(err)


def _botocore_exception_classes() -> list[type[BaseException]]:
    return sorted(
        (
            cls
            for _, cls in inspect.getmembers(bx, inspect.isclass)
            if issubclass(cls, bx.BotoCoreError)
        ),
        key=lambda c: c.__name__,
    )


@pytest.mark.parametrize("cls", _botocore_exception_classes(), ids=lambda c: c.__name__)
def test_every_botocore_exception_class_is_mapped(cls: type[BaseException]) -> None:
    # instances without running their message formatting: only the type matters
    exc = cls.__new__(cls)
    family = error_family(exc)
    err = map_error(exc, "AWS")
    check(err, family)
    assert cls.__name__ in str(err)


@pytest.mark.parametrize(
    ("exc", "family"),
    [
        (bx.EndpointConnectionError(endpoint_url="http://x"), "unavailable"),
        (bx.ConnectTimeoutError(endpoint_url="http://x"), "unavailable"),
        (bx.ReadTimeoutError(endpoint_url="http://x"), "unavailable"),
        (bx.ConnectionClosedError(endpoint_url="http://x"), "unavailable"),
        (bx.NoCredentialsError(), "no_credentials"),
        (bx.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
         "no_credentials"),
        (bx.CredentialRetrievalError(provider="sso", error_msg=LEAK), "no_credentials"),
        (bx.NoRegionError(), "config"),
        (bx.ProfileNotFound(profile="nope"), "config"),
        (bx.ParamValidationError(report=LEAK), "invalid"),
    ],
)
def test_botocore_exceptions_as_raised(exc: BaseException, family: str) -> None:
    assert error_family(exc) == family
    err = map_error(exc, "AWS")
    check(err, family)


def test_missing_region_says_what_to_do() -> None:
    err = map_error(bx.NoRegionError(), "AWS")
    assert err.hint is not None and "AWS_REGION" in err.hint and "?region=" in err.hint


def test_aws_errors_does_not_chain_the_sdk_exception() -> None:
    with pytest.raises(NotFoundError) as info, _aws_errors.aws_errors("AWS"):
        raise client_error("ResourceNotFoundException")
    assert info.value.__cause__ is None and info.value.__suppress_context__
