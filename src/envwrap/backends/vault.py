"""``vault://MOUNT/PATH[?version=N][#KEY]``: HashiCorp Vault and OpenBao (DESIGN §1).

Reading
    The mount under a path is detected once per mount, as the ``vault kv`` CLI
    does (``GET sys/internal/ui/mounts/PATH``). On a KV v2 mount the logical
    path (``secret/app``) and the API path (``secret/data/app``) both work --
    a path whose first part below the mount is ``data/`` is taken as the API
    path, so a KV v2 secret whose own name starts with ``data/`` is written
    ``secret/data/data/NAME``. ``?version=N`` reads version N (KV v2 only);
    a negative N counts back from the current version (``-1`` is the one
    before it). A KV v1 secret, or any other readable path (dynamic secrets
    such as ``database/creds/ROLE``), is read as it is; the lease it carries is
    kept in :attr:`Fetched.lease`. When mount detection is denied or the
    server has no such endpoint, the path is read as it is.

    :attr:`Fetched.data` is the secret's key-value mapping; ``#KEY``, ``#/json/pointer``
    and the whole secret as JSON are selected by the resolver.
    :attr:`Fetched.version` is the KV v2 version number (``None`` elsewhere).

Connection (the Vault CLI's variables, read from the merged environment)
    ``VAULT_ADDR`` (default ``https://127.0.0.1:8200``), ``VAULT_NAMESPACE``,
    ``VAULT_CACERT`` / ``VAULT_CAPATH``, ``VAULT_CLIENT_CERT`` +
    ``VAULT_CLIENT_KEY``, ``VAULT_SKIP_VERIFY``, ``VAULT_CLIENT_TIMEOUT``
    (seconds or ``30s``/``2m``; default 30s), ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
    ``NO_PROXY`` (never for a loopback address). A plain ``http://`` address
    that is not loopback is used, with a warning.

Authentication, chosen by ``VAULT_AUTH_METHOD`` (``token``, ``approle``,
``kubernetes``) or, when it is unset, by the first of these that is present:
    * ``token``: ``VAULT_TOKEN``.
    * ``approle``: ``VAULT_ROLE_ID`` and ``VAULT_SECRET_ID`` -- or
      ``VAULT_SECRET_ID_FILE``, a file holding the secret id (as written by a
      secret-id delivery tool); no secret id at all for a role with
      ``bind_secret_id=false``. ``VAULT_APPROLE_MOUNT`` (default ``approle``).
    * ``kubernetes``: ``VAULT_K8S_ROLE``; the service-account token is read from
      ``VAULT_K8S_TOKEN_FILE`` (default
      ``/var/run/secrets/kubernetes.io/serviceaccount/token``);
      ``VAULT_K8S_MOUNT`` (default ``kubernetes``).
    * ``token`` again: the file ``~/.vault-token`` (``HOME`` of the environment).

    envwrap's credentials never reach the child: ``VAULT_TOKEN``,
    ``VAULT_ROLE_ID`` and ``VAULT_SECRET_ID`` are scrubbed (see
    :mod:`envwrap.process.launch`).

Transport
    Logins, lease and token renewal, mount detection and metadata go through
    hvac. The reads themselves -- ``GET /v1/MOUNT/data/PATH`` and
    ``GET /v1/PATH``, all of a resolution's requests but the detection -- skip
    hvac's and ``requests``' per-call work (session merging, request
    preparation, response wrapping: about half of the 1.1 ms of CPU a read
    costs through them, which fifty reader threads queue for under the GIL)
    and go to the urllib3 connection pool of the same session,
    with the TLS settings, proxy, headers and timeouts that ``requests``
    computes for it once (:class:`_Reads`). A reply other than 200 becomes the
    hvac exception hvac would raise for its status; a redirect, or a session
    that holds cookies or response hooks, is left to hvac and ``requests``.

Errors are mapped once, in :func:`map_error`: no such secret, key or version
-> :class:`NotFoundError` (65); bad token, denied -> :class:`AuthError` (77);
unreachable, 5xx, 412, 429 -> :class:`StoreUnavailableError` (retried by the
resolver). Messages never quote a response body or a value.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

import hvac
import hvac.exceptions
import requests
import requests.adapters
import requests.cookies
import urllib3
import urllib3.exceptions

from envwrap import log
from envwrap.backends import Backend, Fetched, Lease
from envwrap.errors import (
    AuthError,
    ConfigError,
    EnvwrapError,
    NotFoundError,
    StoreUnavailableError,
)
from envwrap.refs import Locator

__all__ = ["VaultBackend", "map_error"]

DEFAULT_ADDR = "https://127.0.0.1:8200"  # the Vault CLI's default
DEFAULT_K8S_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
#: connection attempts fail fast: the resolver retries with backoff up to --start-timeout
CONNECT_TIMEOUT = 2.0
DEFAULT_READ_TIMEOUT = 30.0
AUTH_METHODS = ("token", "approle", "kubernetes")
RENEWAL_SLACK = 2  # seconds
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


class Mount(NamedTuple):
    """A mount as detected: its path (``secret/``) and whether it is KV version 2."""

    path: str
    kv2: bool


class VaultBackend(Backend):
    """Vault / OpenBao; see the module docstring for references and settings.

    Besides the :class:`Backend` interface, for rotation:

    * ``probe(locator)``: KV v2 -- the current version from the secret's
      metadata (no value is read); a fixed ``?version=N`` gives N, a negative
      one is counted from the current version. ``None`` (re-read to compare)
      for KV v1, other paths, and when reading the metadata is denied.
    * ``renew_lease(lease) -> Lease``: ``sys/leases/renew``; the returned lease
      has the new duration. Raises mapped errors (65 for an unknown lease).
    * ``revoke_lease(lease)`` and ``revoke_token() -> bool`` (``--revoke-on-exit``):
      ``sys/leases/revoke``; ``auth/token/revoke-self`` for a token envwrap
      logged in for (never a ``VAULT_TOKEN`` it was given).
    * ``renew_token() -> float | None``: renews envwrap's own token when it is
      renewable and returns its new TTL in seconds; logs in again (AppRole,
      Kubernetes) when it cannot be renewed or renewal no longer extends it;
      ``None`` when the token never expires or cannot be renewed.

    The client is shared by the reader threads of ``read_many``: one
    ``requests`` session whose connection pool holds a connection per thread.
    """

    scheme = "vault"
    #: a resolution reads every distinct path at once; 64 threads keep 50 paths
    #: to one round trip (the pool below is sized to match)
    max_concurrency = 64

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(environ)
        self.settings = read_settings(environ)
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        self._reads: _Reads | None = None
        self._logged_in = False
        self._mounts: dict[str, Mount] = {}
        self._mount_locks: dict[str, threading.Lock] = {}
        #: requests made to sys/internal/ui/mounts, for tests and benchmarks
        self.detections = 0
        _warn_if_plain_http(self.settings.addr)

    # -- the Backend interface ----------------------------------------------------------

    def read(self, locator: Locator) -> Fetched:
        with self._errors():
            mount = self._mount_of(locator.path)
            if mount is not None and mount.kv2:
                return self._read_kv2(mount, _below(locator.path, mount), locator)
            if locator.param("version") is not None:
                raise NotFoundError(
                    "?version= needs a KV version 2 mount, and this path is not on one",
                    hint="drop ?version=, or check the mount with `bao secrets list`",
                )
            return self._read_plain(locator.path)

    def probe(self, locator: Locator) -> str | None:
        with self._errors():
            mount = self._mount_of(locator.path)
            if mount is None or not mount.kv2:
                return None
            requested = _requested_version(locator)
            if requested is not None and requested > 0:
                return str(requested)
            current = self._current_version(mount, _below(locator.path, mount))
            if current is None:
                return None  # metadata denied: the watcher re-reads and compares
            return str(_absolute(current, requested))

    def renew_lease(self, lease: Lease) -> Lease:
        with self._errors(action="renew the lease"):
            response = self._client_ready().adapter.put(
                "/v1/sys/leases/renew", json={"lease_id": lease.lease_id}
            )
            body = _json(response)
            return Lease(
                str(body.get("lease_id") or lease.lease_id),
                int(body.get("lease_duration") or 0),
                bool(body.get("renewable")),
            )

    def renew_token(self) -> float | None:
        with self._errors(action="renew the token"):
            client = self._client_ready()
            info = _json(client.adapter.get("/v1/auth/token/lookup-self"))["data"]
            ttl = int(info.get("ttl") or 0)
            if ttl == 0 and not info.get("expire_time"):
                return None  # a token that never expires (a root token)
            if info.get("renewable"):
                try:
                    auth = _json(client.adapter.post("/v1/auth/token/renew-self"))["auth"]
                    renewed = int(auth.get("lease_duration") or 0)
                except hvac.exceptions.VaultError:
                    if not self._can_login():
                        raise
                    renewed = 0
                # a renewal capped by the token's max TTL no longer extends it (the
                # slack absorbs TTLs rounded to whole seconds); then log in afresh
                if renewed > ttl + RENEWAL_SLACK or not self._can_login():
                    return float(renewed) if renewed else None
            if not self._can_login():
                return None
            with self._lock:
                return self._login(client)

    def revoke_lease(self, lease: Lease) -> None:
        """``sys/leases/revoke``: end a dynamic secret now (Vault deletes the credentials)."""
        with self._errors(action="revoke the lease"):
            self._client_ready().adapter.put(
                "/v1/sys/leases/revoke", json={"lease_id": lease.lease_id}
            )

    def revoke_token(self) -> bool:
        """Revoke the token envwrap logged in for (AppRole, Kubernetes); ``True`` if it did.

        A token envwrap was *given* (``VAULT_TOKEN``, a token file) belongs to
        its user and is left alone.
        """
        if not self._can_login():
            return False
        with self._lock:
            client, logged_in = self._client, self._logged_in
        if client is None or not logged_in:
            return False
        with self._errors(action="revoke the token"):
            client.adapter.post("/v1/auth/token/revoke-self")
        with self._lock:
            self._logged_in = False
        return True

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.adapter.close()
                self._client = None
                self._reads = None
                self._logged_in = False

    # -- reading --------------------------------------------------------------------------

    def _read_kv2(self, mount: Mount, name: str, locator: Locator) -> Fetched:
        if not name:
            raise NotFoundError("the path names a mount, not a secret in it")
        version = self._version_to_read(mount, name, locator)
        params = {"version": str(version)} if version is not None else None
        try:
            response = self._get(f"{_quoted(mount.path)}data/{_quoted(name)}", params)
        except hvac.exceptions.InvalidPath:
            if version is None:
                raise NotFoundError(
                    "no such secret (or its current version was deleted)",
                    hint="check the path; `bao kv get MOUNT/PATH` shows what exists",
                ) from None
            raise NotFoundError(
                f"no version {version} of this secret (never written, deleted or destroyed)",
                hint="`bao kv metadata get MOUNT/PATH` lists the versions",
            ) from None
        body = _json(response)["data"]
        data = body.get("data")
        if not isinstance(data, Mapping):
            raise NotFoundError("this version of the secret was deleted")
        return Fetched(data, version=str(body["metadata"]["version"]))

    def _read_plain(self, path: str) -> Fetched:
        try:
            response = self._get(_quoted(path))
        except hvac.exceptions.InvalidPath:
            raise NotFoundError(
                "nothing at this path (no such secret, or no such mount)",
                hint="check the mount and path; `bao secrets list` shows the mounts",
            ) from None
        if not isinstance(response, Mapping):  # 204: the path exists but holds nothing
            raise NotFoundError("Vault returned no data for this path")
        data = response.get("data")
        if not isinstance(data, Mapping):
            raise NotFoundError("Vault returned no data for this path")
        return Fetched(data, lease=_lease_of(response))

    def _version_to_read(self, mount: Mount, name: str, locator: Locator) -> int | None:
        requested = _requested_version(locator)
        if requested is None or requested > 0:
            return requested
        current = self._current_version(mount, name)
        if current is None:
            # metadata may be denied while data is allowed: learn the current
            # version from a read of the latest data instead
            current = int(self._read_kv2(mount, name, _without_version(locator)).version or 0)
        return _absolute(current, requested)

    def _current_version(self, mount: Mount, name: str) -> int | None:
        """The current version from the secret's metadata; ``None`` when that is denied."""
        if not name:
            raise NotFoundError("the path names a mount, not a secret in it")
        try:
            response = self._client_ready().adapter.get(
                f"/v1/{_quoted(mount.path)}metadata/{_quoted(name)}"
            )
        except hvac.exceptions.Forbidden:
            return None
        except hvac.exceptions.InvalidPath:
            raise NotFoundError("no such secret") from None
        return int(_json(response)["data"]["current_version"])

    # -- mounts ---------------------------------------------------------------------------

    def _mount_of(self, path: str) -> Mount | None:
        """The mount under ``path``, detected once per mount; ``None``: read as it is.

        Detections of paths that share a first segment are serialised, so that
        fifty concurrent reads on one mount cost one detection; paths with
        different first segments cannot share a mount and detect in parallel.
        """
        found = self._cached_mount(path)
        if found is not None:
            return found
        with self._mount_lock(path.partition("/")[0]):
            found = self._cached_mount(path)
            if found is not None:
                return found
            found = self._detect(path)
            if found is not None:
                with self._lock:
                    self._mounts[found.path] = found
            return found

    def _cached_mount(self, path: str) -> Mount | None:
        best: Mount | None = None
        for mount in list(self._mounts.values()):
            inside = path.startswith(mount.path) or path + "/" == mount.path
            if inside and (best is None or len(mount.path) > len(best.path)):
                best = mount
        return best

    def _mount_lock(self, segment: str) -> threading.Lock:
        with self._lock:
            return self._mount_locks.setdefault(segment, threading.Lock())

    def _detect(self, path: str) -> Mount | None:
        with self._lock:
            self.detections += 1
        try:
            response = self._client_ready().adapter.get(
                f"/v1/sys/internal/ui/mounts/{_quoted(path)}"
            )
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidPath):
            # 403: no access to the preflight endpoint, or no such mount; 404: an
            # old server. The plain read that follows gives the precise answer.
            return None
        data = _json(response).get("data") or {}
        mount_path = str(data.get("path") or "")
        if not mount_path:
            return None
        relative = _relative_mount(path, mount_path)
        if relative is None:
            return None
        options = data.get("options") or {}
        kv2 = data.get("type") in ("kv", "generic") and str(options.get("version")) == "2"
        return Mount(relative, kv2)

    # -- the client and login -------------------------------------------------------------

    def _client_ready(self) -> hvac.Client:
        """The shared client, logged in; the first caller logs in for all threads."""
        with self._lock:
            if self._client is None:
                self._client = _new_client(self.settings)
            client = self._client
            if not self._logged_in:
                self._login(client)
                self._logged_in = True
            return client

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET /v1/PATH`` as ``client.adapter.get`` answers it, on the short path.

        The result and the exceptions are hvac's: the JSON body of a 200 reply
        (a non-mapping for any other 2xx, or a body that is not JSON), the
        hvac exception for a 4xx/5xx status; transport failures raise urllib3's
        exceptions, which :func:`map_error` maps as it maps requests' own.
        """
        client = self._client_ready()
        with self._lock:
            reads = self._reads
            if reads is None and self._client is client:
                reads = self._reads = _Reads(client, self.settings)
        if reads is None or not reads.usable():
            return client.adapter.get(f"/v1/{path}", params=params)
        return reads.get(client, path, params)

    def _can_login(self) -> bool:
        return self.settings.auth in ("approle", "kubernetes")

    def _login(self, client: hvac.Client) -> float | None:
        """Authenticate ``client``; the new token's TTL in seconds (``None``: no expiry)."""
        settings = self.settings
        if settings.auth == "token":
            client.token = settings.token
            return None
        if settings.auth == "approle":
            mount, payload = settings.approle_mount, _approle_payload(settings)
        else:
            mount, payload = settings.k8s_mount, _kubernetes_payload(settings)
        try:
            response = client.adapter.login(f"/v1/auth/{_quoted(mount)}/login", json=payload)
        except (requests.RequestException, hvac.exceptions.VaultError) as exc:
            raise map_error(exc, settings.addr, action=f"log in with {settings.auth}") from None
        ttl = int(_json(response)["auth"].get("lease_duration") or 0)
        return float(ttl) if ttl else None

    @contextmanager
    def _errors(self, action: str = "read the secret") -> Iterator[None]:
        """Turn every SDK or transport exception into an envwrap error, once, here."""
        try:
            yield
        except EnvwrapError:
            raise
        except (requests.RequestException, urllib3.exceptions.HTTPError,
                hvac.exceptions.VaultError, ValueError, KeyError, TypeError) as exc:
            raise map_error(exc, self.settings.addr, action=action) from None


class _Reads:
    """``GET /v1/...`` on the session's own urllib3 pool, without ``requests``' per-call work.

    Everything ``requests`` would decide for such a request -- the connection
    pool for the address (TLS verification, CA file or directory, client
    certificate, proxy and its credentials), the request target (a path, or
    the whole URL through an http:// proxy), the session's default headers --
    is decided by ``requests``' own code, once, for a template request to
    ``VAULT_ADDR/v1/``; hvac's headers (``X-Vault-Request``,
    ``X-Vault-Namespace``, the current ``X-Vault-Token``) and its URL clean-up
    are added as hvac adds them. Thread-safe: urllib3 pools are.
    """

    def __init__(self, client: hvac.Client, settings: Settings) -> None:
        adapter = client.adapter
        self.session: requests.Session = adapter.session
        self.headers: dict[str, str] = {}
        if adapter.request_header:
            self.headers["X-Vault-Request"] = "true"
        if adapter.namespace:
            self.headers["X-Vault-Namespace"] = adapter.namespace
        self.base = adapter.urljoin(adapter.base_uri, "v1") + "/"
        template = self.session.prepare_request(
            requests.Request("GET", self.base, headers=self.headers)
        )
        merged = self.session.merge_environment_settings(
            template.url, {}, None, settings.verify, settings.cert
        )
        transport = self.session.get_adapter(self.base)
        assert isinstance(transport, requests.adapters.HTTPAdapter)  # mounted by _new_client
        self.pool = transport.get_connection_with_tls_context(
            template, merged["verify"], proxies=merged["proxies"], cert=merged["cert"]
        )
        transport.cert_verify(self.pool, self.base, merged["verify"], merged["cert"])
        self.target = transport.request_url(template, merged["proxies"])
        self.headers = {str(k): str(v) for k, v in template.headers.items()}
        connect, read = _timeouts(settings)
        self.timeout = urllib3.Timeout(connect=connect, read=read)
        self.retries = transport.max_retries

    def usable(self) -> bool:
        """``False`` when ``requests`` has per-call work to do: cookies to send, hooks to run."""
        return not (any(self.session.hooks.values()) or len(self.session.cookies))

    def get(self, client: hvac.Client, path: str, params: Mapping[str, str] | None) -> Any:
        while "//" in path:  # as hvac does
            path = path.replace("//", "/")
        path = path.strip("/")
        query = "?" + urlencode(params) if params else ""
        headers = self.headers.copy()
        if client.token:
            headers["X-Vault-Token"] = client.token
        response = self.pool.urlopen(
            "GET", self.target + path + query, headers=headers, redirect=False,
            assert_same_host=False, retries=self.retries, timeout=self.timeout,
            preload_content=True, decode_content=True,
        )
        if response.headers.get("Set-Cookie"):
            request = requests.Request("GET", self.base + path + query).prepare()
            requests.cookies.extract_cookies_to_jar(self.session.cookies, request, response)
        status = response.status
        if status == 200:
            try:
                return json.loads(response.data)
            except ValueError:
                return None  # hvac hands back the response object; no mapping either way
        if 300 <= status < 400:  # requests follows redirects; let it
            return client.adapter.get(f"/v1/{path}", params=params)
        if status < 400:
            return None
        raise _error_for_status(response, self.base + path)


def _error_for_status(response: urllib3.BaseHTTPResponse, url: str) -> hvac.exceptions.VaultError:
    """The exception hvac's adapter raises for an error reply (``_raise_for_error``)."""
    text = response.data.decode("utf-8", "replace")
    body: Any = None
    errors: Any = None
    if response.headers.get("Content-Type") == "application/json":
        try:
            body = json.loads(text)
            errors = body.get("errors")
        except (ValueError, AttributeError):
            pass
    error: hvac.exceptions.VaultError = hvac.exceptions.VaultError.from_status(
        response.status, text if errors is None else None,
        errors=errors, method="get", url=url, text=text, json=body,
    )
    return error


# -- error mapping ---------------------------------------------------------------------

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
    "InvalidPath": (
        NotFoundError,
        "nothing at this path (HTTP 404)",
        "check the mount and path",
    ),
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
    "ParamValidationError": (
        ConfigError,
        "invalid parameters for a Vault request",
        None,
    ),
    "VaultError": (
        StoreUnavailableError,
        "Vault reported an error",
        _TRANSIENT_HINT,
    ),
}


def map_error(exc: BaseException, addr: str, *, action: str = "read the secret") -> EnvwrapError:
    """The envwrap error for an hvac, requests or urllib3 exception -- the only mapping.

    The message names the kind of failure and never quotes hvac's message or
    the response (either may echo request data). A login that Vault rejects
    (400, 401, 403, 404) is an :class:`AuthError`.
    """
    where = _safe_address(addr)
    if isinstance(exc, hvac.exceptions.VaultError):
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
    if (isinstance(exc, requests.exceptions.Timeout | u3.TimeoutError)
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
    # ValueError / KeyError / TypeError: a body that is not the JSON Vault sends
    return StoreUnavailableError(
        f"cannot {action}: unexpected response from {where}",
        hint="is VAULT_ADDR a Vault server, not a proxy or web page?",
    )


# -- settings --------------------------------------------------------------------------


def read_settings(environ: Mapping[str, str]) -> Settings:
    """Connection and login settings from ``environ``; :class:`ConfigError` when invalid."""
    addr = (environ.get("VAULT_ADDR") or DEFAULT_ADDR).rstrip("/")
    parts = urlsplit(addr)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"VAULT_ADDR {_safe_address(addr)!r} is not an http:// or https:// address",
            hint="write VAULT_ADDR=https://HOST:8200",
        )
    return Settings(
        addr=addr,
        namespace=environ.get("VAULT_NAMESPACE") or None,
        verify=_verify(environ),
        cert=_client_cert(environ),
        timeout=_timeout(environ.get("VAULT_CLIENT_TIMEOUT")),
        proxies=_proxies(environ, parts.scheme, parts.hostname),
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
    if not proxy or _is_loopback(host):
        return {}
    no_proxy = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    for entry in (e.strip().lstrip(".").lower() for e in no_proxy.split(",")):
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return {}
    return {scheme: proxy}


def _new_client(settings: Settings) -> hvac.Client:
    session = requests.Session()
    # settings come from the merged environment, not requests' own reading of
    # os.environ (nor ~/.netrc, whose credentials must not be sent to Vault)
    session.trust_env = False
    session.proxies = dict(settings.proxies)
    # hvac lets a given session's verify/cert win over its own arguments, and a
    # new session's verify is True: set them on the session, or VAULT_CACERT is lost
    session.verify = settings.verify
    session.cert = settings.cert
    if settings.verify is False:
        # urllib3 would warn on every request; say it once, our way
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        log.warning("VAULT_SKIP_VERIFY is set: Vault's TLS certificate is not checked",
                    address=_safe_address(settings.addr))
    # one connection per reader thread; requests' default pool keeps only 10
    pool = requests.adapters.HTTPAdapter(
        pool_connections=4, pool_maxsize=VaultBackend.max_concurrency, max_retries=0
    )
    session.mount("https://", pool)
    session.mount("http://", pool)
    return hvac.Client(
        url=settings.addr,
        token="",  # not None: hvac would read VAULT_TOKEN from os.environ itself
        cert=settings.cert or False,  # not None: hvac would read VAULT_CLIENT_CERT itself
        verify=settings.verify,
        timeout=_timeouts(settings),
        session=session,
        namespace=settings.namespace,
    )


def _timeouts(settings: Settings) -> tuple[float, float]:
    """(connect, read) timeouts in seconds."""
    return min(CONNECT_TIMEOUT, settings.timeout), settings.timeout


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


# -- small helpers ---------------------------------------------------------------------


def _json(response: Any) -> Mapping[str, Any]:
    """The body of a 200 response, as hvac's JSON adapter returns it."""
    if not isinstance(response, Mapping):
        raise ValueError("not a JSON body")
    return response


def _lease_of(response: Mapping[str, Any]) -> Lease | None:
    # KV v1 reports a lease_duration (its refresh interval) without a lease id
    lease_id = response.get("lease_id")
    if not lease_id:
        return None
    return Lease(str(lease_id), int(response.get("lease_duration") or 0),
                 bool(response.get("renewable")))


def _requested_version(locator: Locator) -> int | None:
    text = locator.param("version")
    if text is None:
        return None
    number = int(text)  # the reference grammar has checked it is an integer
    if number == 0:
        # Vault would answer version 0 with the latest; a pinned reference must not
        raise NotFoundError("there is no version 0: versions count from 1",
                            hint="use ?version=N (N >= 1) or a negative N to count back")
    return number


def _absolute(current: int, requested: int | None) -> int:
    if requested is None:
        return current
    number = current + requested
    if number < 1:
        raise NotFoundError(
            f"no version {requested} of this secret: the current version is {current}"
        )
    return number


def _without_version(locator: Locator) -> Locator:
    return Locator(locator.scheme, locator.path,
                   tuple((k, v) for k, v in locator.params if k != "version"))


def _below(path: str, mount: Mount) -> str:
    """The secret's name below a KV v2 mount; an API path loses its ``data/``."""
    name = path[len(mount.path):] if path.startswith(mount.path) else ""
    return name[len("data/"):] if name.startswith("data/") else name


def _relative_mount(path: str, mount_path: str) -> str | None:
    """The mount path as the reference writes it; ``None`` if it does not prefix ``path``.

    In a namespace the server may answer with the namespace in front of the
    mount; drop leading segments until it prefixes ``path``, as the Vault CLI does.
    """
    candidate = mount_path if mount_path.endswith("/") else mount_path + "/"
    while candidate and not (path.startswith(candidate) or path + "/" == candidate):
        candidate = candidate.partition("/")[2]
    return candidate or None


def _quoted(path: str) -> str:
    return quote(path, safe="/-_.~@:+,=")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _safe_address(addr: str) -> str:
    """The address without any user:password part, for messages."""
    parts = urlsplit(addr)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    if parts.hostname is None:
        return addr[:200]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}"


def _warn_if_plain_http(addr: str) -> None:
    parts = urlsplit(addr)
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        log.warning(
            "VAULT_ADDR uses plain http:// to another machine: the token and the secrets "
            "cross the network unencrypted; use https://",
            address=_safe_address(addr),
        )
