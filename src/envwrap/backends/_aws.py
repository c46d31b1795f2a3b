"""What the AWS backends share: one boto3 session, a client per region, batching,
and the one place where botocore's errors become envwrap's.

This module imports boto3 (~330 ms), so only ``aws_sm`` and ``aws_ssm`` import
it, and those are loaded only when a reference names their scheme.

Settings are read the AWS way: boto3's default credential chain, profiles,
``AWS_ENDPOINT_URL`` and friends. Two additions:

* ``AWS_REGION`` is honoured as well as ``AWS_DEFAULT_REGION`` (botocore reads
  only the latter, every other AWS SDK and the Lambda runtime set the former);
* AWS settings that come from a ``.env`` file (present in the merged environment
  the backend is given, absent from the process environment boto3 reads) are
  passed to boto3 explicitly, so that ``.env`` can hold them as it can hold
  ``VAULT_ADDR``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar, TypeVar

import boto3
import botocore.exceptions as bx
from botocore.config import Config
from botocore.parsers import ResponseParserError

from envwrap.backends.contract import Backend
from envwrap.backends.fanout import run_all
from envwrap.errors import (
    AuthError,
    ConfigError,
    EnvwrapError,
    NotFoundError,
    ReferenceSyntaxError,
    StoreUnavailableError,
)
from envwrap.refs import Locator

__all__ = ["SDK_ERRORS", "AwsBackend", "aws_errors", "error_family", "foreign_reply",
           "map_error", "map_error_code"]

T = TypeVar("T")

#: botocore retries only briefly: the resolver retries transient errors with
#: backoff up to --start-timeout, and a long SDK retry loop would overrun it.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 2},
    connect_timeout=2,
    read_timeout=10,
    max_pool_connections=Backend.max_concurrency,
    user_agent_extra="envwrap",
)

# --- errors ------------------------------------------------------------------

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


# --- session and clients -----------------------------------------------------


def _from_dotenv(environ: Mapping[str, str], name: str) -> str | None:
    """A setting boto3 cannot see: in the merged environment, not the process's."""
    value = environ.get(name)
    return value if value and os.environ.get(name) != value else None


def default_region(environ: Mapping[str, str]) -> str | None:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None


_ENDPOINT_VARIABLES = {
    "secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "ssm": "AWS_ENDPOINT_URL_SSM",
}


#: one boto3 session per distinct set of settings -- in practice one per process,
#: shared by both backends, so that credentials are resolved once (an SSO token
#: read, an instance-metadata call). Its lock guards client creation too:
#: boto3 sessions are not thread-safe, their clients are.
_sessions: dict[tuple[tuple[str, str | None], ...], boto3.Session] = {}
_session_lock = threading.Lock()


def _session_settings(env: Mapping[str, str]) -> tuple[tuple[str, str | None], ...]:
    key_id = _from_dotenv(env, "AWS_ACCESS_KEY_ID")
    secret = env.get("AWS_SECRET_ACCESS_KEY") if key_id else None
    return (
        ("aws_access_key_id", key_id if secret else None),
        ("aws_secret_access_key", secret),
        ("aws_session_token", env.get("AWS_SESSION_TOKEN") if key_id and secret else None),
        ("region_name", default_region(env)),
        ("profile_name", _from_dotenv(env, "AWS_PROFILE")),
    )


def _shared_session_locked(env: Mapping[str, str]) -> boto3.Session:
    settings = _session_settings(env)
    session = _sessions.get(settings)
    if session is None:
        session = _sessions[settings] = boto3.Session(**dict(settings))  # type: ignore[arg-type]
    return session


class Clients:
    """The shared boto3 session and one client per region for one service; thread-safe.

    The session and the clients are created on first use: creating a session
    reads the AWS config files, creating a client loads the service model.
    """

    def __init__(self, service: str, environ: Mapping[str, str]) -> None:
        self.service = service
        self._environ = environ
        self._clients: dict[str, Any] = {}

    def session(self) -> boto3.Session:
        with _session_lock:
            return _shared_session_locked(self._environ)

    def default_region(self) -> str | None:
        return self.session().region_name

    def client(self, region: str) -> Any:
        with _session_lock:
            client = self._clients.get(region)
            if client is None:
                client = _shared_session_locked(self._environ).client(
                    self.service,  # type: ignore[call-overload]
                    region_name=region,
                    config=CLIENT_CONFIG,
                    endpoint_url=self._endpoint_from_dotenv(),
                )
                self._clients[region] = client
            return client

    def _endpoint_from_dotenv(self) -> str | None:
        # botocore's names: AWS_ENDPOINT_URL_<service id, upper case, '_' for ' '>
        specific = _ENDPOINT_VARIABLES.get(self.service, "")
        return _from_dotenv(self._environ, specific) or _from_dotenv(
            self._environ, "AWS_ENDPOINT_URL"
        )

    def close(self) -> None:
        with _session_lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()


# --- batching ----------------------------------------------------------------

#: a batch call: (client, ids) -> one outcome per id it could answer; an id it
#: leaves out is read on its own
BatchCall = Callable[[Any, Sequence[str]], Mapping[str, "T | EnvwrapError"]]


class AwsBackend(Backend):
    """Shared base: regions, clients, and batched reads with a per-secret fallback."""

    #: boto3 service name
    service: ClassVar[str] = ""
    #: for messages
    label: ClassVar[str] = ""
    #: the most ids one batch call accepts
    batch_size: ClassVar[int] = 10

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(environ)
        self._clients = Clients(self.service, environ)
        #: regions where the batch call was denied: read one by one there
        self._batch_denied: set[str] = set()

    def region_of(self, locator: Locator) -> str:
        """``?region=`` (an ARN's region is put there by the parser), else the default."""
        region = locator.param("region")
        if region:
            return region
        with aws_errors(self.label):
            region = self._clients.default_region()
        if not region:
            raise ConfigError(
                f"{self.label}: no AWS region is configured",
                hint="set AWS_REGION or add ?region= to the reference",
            )
        return region

    def client(self, locator: Locator) -> Any:
        """The client for the locator's region; raises envwrap errors only."""
        self.validate(locator)
        region = self.region_of(locator)
        with aws_errors(self.label):
            return self._clients.client(region)

    def close(self) -> None:
        self._clients.close()

    def batched(
        self,
        locators: Sequence[Locator],
        batch_call: BatchCall[T],
        single: Callable[[Locator], T],
        batchable: Callable[[Locator], bool] = lambda _: True,
    ) -> list[T | EnvwrapError]:
        """Answer every locator with as few calls as possible.

        Batchable locators are grouped by region and sent ``batch_size`` at a
        time; the rest, ids a batch did not answer, and whole batches in a
        region where the batch call is denied are read one by one. All calls
        run concurrently. Errors are returned in place, never raised.
        """
        # index -> outcome; dict writes from worker threads are atomic in CPython
        results: dict[int, T | EnvwrapError] = {}
        groups: dict[str, list[int]] = {}
        singles: list[int] = []
        for index, locator in enumerate(locators):
            try:
                self.validate(locator)
                region = self.region_of(locator)
            except EnvwrapError as err:
                results[index] = err
                continue
            if batchable(locator) and region not in self._batch_denied:
                groups.setdefault(region, []).append(index)
            else:
                singles.append(index)

        def read_one(index: int) -> None:
            try:
                results[index] = single(locators[index])
            except EnvwrapError as err:
                results[index] = err

        def read_batch(region: str, chunk: list[int]) -> None:
            answered = self._batch_round(region, [locators[i] for i in chunk], batch_call)
            for index in chunk:
                path = locators[index].path
                if path in answered:
                    results[index] = answered[path]
            self._run_all([partial(read_one, i) for i in chunk if i not in results])

        jobs: list[Callable[[], None]] = [partial(read_one, i) for i in singles]
        for region, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                jobs.append(partial(read_batch, region, indices[start : start + self.batch_size]))
        self._run_all(jobs)
        return [results[index] for index in range(len(locators))]

    def _run_all(self, jobs: Sequence[Callable[[], None]]) -> None:
        run_all(jobs, limit=self.max_concurrency, name="aws")

    def _batch_round(
        self, region: str, chunk: Sequence[Locator], batch_call: BatchCall[T]
    ) -> Mapping[str, T | EnvwrapError]:
        """One batch call: outcomes by id; an id left out is to be read on its own."""
        ids = list(dict.fromkeys(loc.path for loc in chunk))
        try:
            return batch_call(self._clients.client(region), ids)
        except SDK_ERRORS as exc:
            if error_family(exc) == "denied":
                # a policy may allow the single-value call and not the batch
                # one: remember, and read one by one in this region from now on
                self._batch_denied.add(region)
                return {}
            # one error object per id: the resolver names each one's variable
            return {secret_id: map_error(exc, self.label) for secret_id in ids}

