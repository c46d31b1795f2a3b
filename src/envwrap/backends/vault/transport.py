"""How envwrap talks to Vault: the hvac client, the short read path, and the replies.

Logins, lease and token renewal, mount detection and metadata go through
hvac. The reads themselves -- ``GET /v1/MOUNT/data/PATH`` and ``GET /v1/PATH``,
all of a resolution's requests but the detection -- skip hvac's and
``requests``' per-call work (session merging, request preparation, response
wrapping: about half of the 1.1 ms of CPU a read costs through them, which
fifty reader threads queue for under the GIL) and go to the urllib3 connection
pool of the same session, with the TLS settings, proxy, headers and timeouts
that ``requests`` computes for it once (:class:`Reads`). A reply other than 200
becomes the hvac exception hvac would raise for its status; a redirect, or a
session that holds cookies or response hooks, is left to hvac and ``requests``.

Whichever way a request goes, the token and the login never leave VAULT_ADDR's
origin: a redirect is followed once at most, and only to the same scheme, host
and port (:class:`StoreSession`); a reply is read up to
:data:`~envwrap.backends.contract.MAX_SECRET_BYTES`, never whole
(:func:`read_capped`). docs/SECURITY.md says why.

A reply is read through :func:`body`, :func:`section` and :func:`whole`, which
raise :class:`UnexpectedReply` for a shape Vault never sends.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import hvac
import hvac.exceptions
import requests
import requests.adapters
import requests.cookies
import urllib3
import urllib3.exceptions

from envwrap import log
from envwrap.backends.contract import MAX_SECRET_BYTES
from envwrap.backends.vault.errors import ReplyRefused, UnexpectedReply
from envwrap.backends.vault.settings import Settings, safe_address

__all__ = ["Reads", "StoreSession", "body", "new_client", "quoted", "read_capped", "section",
           "whole"]

#: connection attempts fail fast: the resolver retries with backoff up to --start-timeout
CONNECT_TIMEOUT = 2.0


def new_client(settings: Settings, pool_size: int) -> hvac.Client:
    """An hvac client on a session of ``pool_size`` connections, set from ``settings`` only."""
    session = StoreSession()
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
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        log.warning("VAULT_SKIP_VERIFY is set: Vault's TLS certificate is not checked",
                    address=safe_address(settings.addr))
    # one connection per reader thread; requests' default pool keeps only 10
    pool = BoundedAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", pool)
    session.mount("http://", pool)
    return hvac.Client(
        url=settings.addr,
        token="",  # not None: hvac would read VAULT_TOKEN from os.environ itself
        cert=settings.cert or False,  # not None: hvac would read VAULT_CLIENT_CERT itself
        verify=settings.verify,
        timeout=timeouts(settings),
        session=session,
        namespace=settings.namespace,
    )


class StoreSession(requests.Session):
    """``requests``' session, following at most one redirect, and only within the
    origin (scheme, host, port) of the request: ``X-Vault-Token`` is not a header
    ``requests`` knows to strip, and a 307 re-sends an AppRole login's body."""

    def __init__(self) -> None:
        super().__init__()
        self.max_redirects = 1

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is not None:
            goes_to = urljoin(resp.url, target)
            if _origin(goes_to) != _origin(resp.url) or _origin(goes_to) is None:
                resp.close()
                raise ReplyRefused(
                    f"{safe_address(resp.url)} redirected to {safe_address(goes_to)}, "
                    "another address",
                    hint="envwrap sends its Vault token and login only to VAULT_ADDR's own "
                    "scheme, host and port; set VAULT_ADDR to the address the redirect names "
                    "if you trust it",
                )
        return target


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    except ValueError:
        return None
    return scheme, (parts.hostname or "").lower(), port


class BoundedAdapter(requests.adapters.HTTPAdapter):
    """``requests``' adapter, reading a reply's body up to the limit (:func:`read_capped`)."""

    def send(self, request: requests.PreparedRequest, stream: bool = False,  # noqa: PLR0917
             timeout: Any = None, verify: bool | str = True, cert: Any = None,
             proxies: dict[str, str] | None = None) -> requests.Response:
        response = super().send(request, stream=True, timeout=timeout, verify=verify,
                                cert=cert, proxies=proxies)
        # what requests would read lazily, read now and bounded; it reads it back from here
        response.raw = io.BytesIO(read_capped(response.raw, request.url or ""))
        return response


def read_capped(raw: urllib3.BaseHTTPResponse, url: str) -> bytes:
    """The (decoded) body of ``raw``, refused beyond :data:`MAX_SECRET_BYTES`; the
    connection goes back to the pool, or is closed when the body is refused."""
    too_large = ReplyRefused(
        f"the reply from {safe_address(url)} is larger than {MAX_SECRET_BYTES} bytes",
        hint="a Vault reply holding a secret is far smaller; is VAULT_ADDR a Vault server?",
    )
    declared = raw.headers.get("Content-Length") or ""
    chunks: list[bytes] = []
    size = 0
    try:
        if declared.isdigit() and int(declared) > MAX_SECRET_BYTES:
            raise too_large
        for chunk in raw.stream(64 * 1024, decode_content=True):
            size += len(chunk)
            if size > MAX_SECRET_BYTES:
                raise too_large
            chunks.append(chunk)
    except BaseException:
        raw.close()
        raise
    finally:
        raw.release_conn()
    return b"".join(chunks)


def timeouts(settings: Settings) -> tuple[float, float]:
    """(connect, read) timeouts in seconds."""
    return min(CONNECT_TIMEOUT, settings.timeout), settings.timeout


class Reads:
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
        assert isinstance(transport, requests.adapters.HTTPAdapter)  # mounted by new_client
        self.pool = transport.get_connection_with_tls_context(
            template, merged["verify"], proxies=merged["proxies"], cert=merged["cert"]
        )
        transport.cert_verify(self.pool, self.base, merged["verify"], merged["cert"])
        self.target = transport.request_url(template, merged["proxies"])
        self.headers = {str(k): str(v) for k, v in template.headers.items()}
        connect, read = timeouts(settings)
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
            preload_content=False, decode_content=True,
        )
        data = read_capped(response, self.base + path)
        if response.headers.get("Set-Cookie"):
            request = requests.Request("GET", self.base + path + query).prepare()
            requests.cookies.extract_cookies_to_jar(self.session.cookies, request, response)
        status = response.status
        if status == 200:
            try:
                return json.loads(data)
            except ValueError:
                return None  # hvac hands back the response object; no mapping either way
        if 300 <= status < 400:  # requests follows redirects; let it
            return client.adapter.get(f"/v1/{path}", params=params)
        if status < 400:
            return None
        raise _error_for_status(response, data, self.base + path)


def _error_for_status(
    response: urllib3.BaseHTTPResponse, data: bytes, url: str
) -> hvac.exceptions.VaultError:
    """The exception hvac's adapter raises for an error reply (``_raise_for_error``)."""
    text = data.decode("utf-8", "replace")
    parsed: Any = None
    errors: Any = None
    if response.headers.get("Content-Type") == "application/json":
        try:
            parsed = json.loads(text)
            errors = parsed.get("errors")
        except (ValueError, AttributeError):
            pass
    error: hvac.exceptions.VaultError = hvac.exceptions.VaultError.from_status(
        response.status, text if errors is None else None,
        errors=errors, method="get", url=url, text=text, json=parsed,
    )
    return error


# -- reading replies --------------------------------------------------------------------


def body(response: Any) -> Mapping[str, Any]:
    """The JSON object of a 200 reply, as hvac's JSON adapter returns it."""
    if not isinstance(response, Mapping):
        raise UnexpectedReply("not a JSON object")
    return response


def section(reply: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``reply[key]``, an object in every reply Vault sends that has it."""
    value = reply.get(key)
    if not isinstance(value, Mapping):
        raise UnexpectedReply(f"no {key!r} object")
    return value


def whole(reply: Mapping[str, Any], key: str) -> int:
    """``reply[key]`` as a whole number of seconds or a version; 0 when absent."""
    value = reply.get(key)
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UnexpectedReply(f"{key!r} is not a number")
    try:
        return int(value)
    except ValueError:
        raise UnexpectedReply(f"{key!r} is not a number") from None


def quoted(path: str) -> str:
    return quote(path, safe="/-_.~@:+,=")
