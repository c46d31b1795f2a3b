"""What the AWS backends share: one boto3 session, a client per region, batching
(botocore's errors become envwrap's in ``_aws_errors``).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, TypeVar

import boto3
from botocore.config import Config

from envwrap.backends._aws_errors import SDK_ERRORS, aws_errors, error_family, map_error
from envwrap.backends.contract import Backend
from envwrap.backends.fanout import run_all
from envwrap.errors import ConfigError, EnvwrapError
from envwrap.refs import Locator

__all__ = ["AwsBackend", "BatchCall", "by_id", "list_of_mappings"]

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


def list_of_mappings(value: object) -> bool:
    """Whether a reply's field is a list of objects, as a batch reply's entries are."""
    return isinstance(value, list) and all(isinstance(item, Mapping) for item in value)


def by_id(entries: Iterable[Mapping[str, Any]], extract: Callable[[Mapping[str, Any]], T],
          ids_of: Callable[[Mapping[str, Any]], Iterable[str]]) -> dict[str, T | EnvwrapError]:
    """A batch reply's entries, each under every id a request may have named it by
    (``ids_of``): what ``extract`` makes of it, or the error it raised."""
    answered: dict[str, T | EnvwrapError] = {}
    for entry in entries:
        outcome: T | EnvwrapError
        try:
            outcome = extract(entry)
        except EnvwrapError as err:
            outcome = err
        for key in ids_of(entry):
            answered[key] = outcome
    return answered


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

