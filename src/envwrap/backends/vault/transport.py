"""How envwrap talks to Vault: JSON over HTTP/1.1 on the standard library's ``http.client``.

Vault's API is a handful of JSON requests (``GET`` a secret, ``PUT`` a lease
renewal, ``POST`` a login), and the process that makes them may stay resident
for the life of a pod (``--watch``, the sidecar). ``hvac`` on ``requests`` and
``urllib3`` costs that process about 10 MiB of private memory and 60 ms of
CPU at start, and a millisecond of CPU per poll (docs/benchmarks.md, the fleet
figures); ``http.client`` does the job and is already loaded.

:class:`Transport` keeps one pool of kept-alive connections, one per reader
thread at most, and sends each request as the Vault CLI does: the
``X-Vault-Token``, ``X-Vault-Namespace`` and ``X-Vault-Request`` headers
(replies are read by :class:`~.reply.Reply`);
TLS from ``VAULT_CACERT``/``VAULT_CAPATH``, else the system's store (else
certifi's bundle), a client certificate, an ``http://`` proxy (``CONNECT`` for
https). A connection the server closed while it was
idle is noticed before it is used.

The token and the login never leave VAULT_ADDR's origin: a redirect is
followed once at most, and only to the same scheme, host and port; a reply is
read up to :data:`~envwrap.backends.contract.MAX_SECRET_BYTES`, never whole.
docs/SECURITY.md says why. A reply with an error status raises
:class:`StatusError`, which :mod:`.errors` maps; a reply is read through
:func:`body`, :func:`section` and :func:`whole`, which raise
:class:`UnexpectedReply` for a shape Vault never sends.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import json
import os
import select
import ssl
import threading
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

from envwrap.backends.contract import MAX_SECRET_BYTES
from envwrap.backends.vault.errors import ReplyRefused, StatusError, UnexpectedReply
from envwrap.backends.vault.reply import Headers, Reply
from envwrap.backends.vault.settings import Settings, safe_address
from envwrap.errors import ConfigError

__all__ = ["Transport", "body", "header_value", "is_header_safe", "quoted", "section",
           "tls_context", "whole"]

#: connection attempts fail fast: the resolver retries with backoff up to --start-timeout
CONNECT_TIMEOUT = 2.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: a redirect that turns into a GET, as browsers and ``requests`` do
_BECOMES_GET = frozenset({301, 302, 303})
_USER_AGENT = "envwrap"


class Transport:
    """Requests to one Vault server over a pool of kept-alive connections; thread-safe."""

    def __init__(self, settings: Settings, pool_size: int) -> None:
        self.settings = settings
        self._pool_size = pool_size
        parts = urlsplit(settings.addr)
        self._scheme = parts.scheme
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._scheme == "https" else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._netloc = f"{self._scheme}://{host}:{self._port}"
        #: the path VAULT_ADDR names, if any (Vault behind a path-routing proxy)
        self._prefix = parts.path.rstrip("/") + "/v1/"
        self._origin = _origin(settings.addr)
        self._proxy = _proxy(settings.proxies.get(self._scheme))
        self._headers = {"User-Agent": _USER_AGENT, "X-Vault-Request": "true"}
        if settings.namespace:
            self._headers["X-Vault-Namespace"] = header_value(settings.namespace,
                                                              "VAULT_NAMESPACE")
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._tls: ssl.SSLContext | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> Any:
        """``METHOD /v1/PATH``: the JSON body of a 2xx reply; ``None`` for a 2xx
        without one (204), or whose body is not JSON. :class:`StatusError` for a
        4xx or 5xx; ``OSError`` and ``http.client.HTTPException`` for the transport."""
        while "//" in path:
            path = path.replace("//", "/")
        target = self._prefix + path.strip("/") + ("?" + urlencode(params) if params else "")
        headers = dict(self._headers)
        if token:
            headers["X-Vault-Token"] = token  # header-safe: checked once, at login (auth.py)
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        status, reply_headers, reply = self._exchange(method, target, headers, data)
        if status in _REDIRECTS:
            target = self._redirect_target(target, reply_headers)
            if status in _BECOMES_GET and method != "GET":
                method, data = "GET", None
                headers.pop("Content-Type", None)
            status, reply_headers, reply = self._exchange(method, target, headers, data)
            if status in _REDIRECTS:
                raise ReplyRefused(
                    f"{safe_address(self.settings.addr)} redirected more than once",
                    hint="envwrap follows one redirect from Vault; point VAULT_ADDR at the "
                    "server itself",
                )
        if status >= 400:
            raise StatusError.of(status, _errors(reply_headers, reply))
        if status == 204 or not reply or not 200 <= status < 300:
            return None
        try:
            return json.loads(reply)
        except ValueError:
            return None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- one exchange -----------------------------------------------------------------

    def _exchange(
        self, method: str, target: str, headers: dict[str, str], data: bytes | None
    ) -> tuple[int, Headers, bytes]:
        """Send once; on a kept-alive connection the server closed meanwhile, once more
        on a new one (the request never reached it)."""
        conn, reused = self._take()
        try:
            return self._send(conn, method, target, headers, data)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conn.close()
            if not reused:
                raise
        except BaseException:
            conn.close()
            raise
        conn, _ = self._take(fresh=True)
        try:
            return self._send(conn, method, target, headers, data)
        except BaseException:
            conn.close()
            raise

    def _send(
        self, conn: http.client.HTTPConnection, method: str, target: str,
        headers: dict[str, str], data: bytes | None,
    ) -> tuple[int, Headers, bytes]:
        if conn.sock is None:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(self.settings.timeout)
        url = target
        if self._proxy is not None and self._scheme == "http":
            url = self._netloc + target  # a proxy wants the whole URL
            if self._proxy.authorization:
                headers = {**headers, "Proxy-Authorization": self._proxy.authorization}
        conn.request(method, url, body=data, headers=headers)
        response = conn.getresponse()
        reply = _read_capped(response, self.settings.addr)  # on failure, the caller closes
        if response.will_close or not response.isclosed():
            conn.close()
        else:
            self._give_back(conn)
        return response.status, cast(Headers, response.headers), reply

    def _redirect_target(self, target: str, headers: Headers) -> str:
        goes_to = urljoin(self._netloc + target, headers.get("Location") or "")
        if _origin(goes_to) != self._origin or self._origin is None:
            raise ReplyRefused(
                f"{safe_address(self.settings.addr)} redirected to {safe_address(goes_to)}, "
                "another address",
                hint="envwrap sends its Vault token and login only to VAULT_ADDR's own "
                "scheme, host and port; set VAULT_ADDR to the address the redirect names "
                "if you trust it",
            )
        parts = urlsplit(goes_to)
        return (parts.path or "/") + ("?" + parts.query if parts.query else "")

    # -- the pool ---------------------------------------------------------------------

    def _take(self, *, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection the server has not closed, or a new one; whether it is reused."""
        while not fresh:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if _still_open(conn):
                return conn, True
            conn.close()
        return self._new_connection(), False

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._pool_size:
                self._idle.append(conn)
                return
        conn.close()

    def _new_connection(self) -> http.client.HTTPConnection:
        host, port = (self._proxy.host, self._proxy.port) if self._proxy else (self._host,
                                                                               self._port)
        conn: http.client.HTTPConnection
        if self._scheme == "https":
            conn = _TLSConnection(host, port, timeout=CONNECT_TIMEOUT, context=self._tls_context())
            if self._proxy is not None:
                tunnel = {"Proxy-Authorization": self._proxy.authorization} \
                    if self._proxy.authorization else None
                conn.set_tunnel(self._host, self._port, headers=tunnel)
        else:
            conn = _Connection(host, port, timeout=CONNECT_TIMEOUT)
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                self._tls = tls_context(self.settings)
            return self._tls


class _Connection(http.client.HTTPConnection):
    response_class = Reply  # replies read without the email package (reply.py)


class _TLSConnection(http.client.HTTPSConnection):
    response_class = Reply


def is_header_safe(value: str) -> bool:
    """Whether ``value`` can be sent as an HTTP header value as it is: ``http.client``
    refuses one that cannot with the value in its message, and a token is never quoted."""
    return value.isascii() and value.isprintable() and value == value.strip()


def header_value(value: str, what: str) -> str:
    """``value``, if it can be sent as an HTTP header (:func:`is_header_safe`); else a
    :class:`ConfigError` naming ``what``, never the value."""
    if not is_header_safe(value):
        raise ConfigError(f"{what} holds a space, a line break or a character that is "
                          "not ASCII", hint="check how it was set (a stray newline?)")
    return value


def tls_context(settings: Settings) -> ssl.SSLContext:
    """TLS as the Vault CLI sets it: VAULT_CACERT (file) or VAULT_CAPATH (folder), else
    the system's store (SSL_CERT_FILE, SSL_CERT_DIR), else -- an image with none, such
    as a distroless one -- certifi's bundle; VAULT_SKIP_VERIFY; a client certificate."""
    context = ssl.create_default_context()
    verify = settings.verify
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        with _unusable("VAULT_CACERT / VAULT_CAPATH", verify):
            if os.path.isdir(verify):
                context.load_verify_locations(capath=verify)
            else:
                context.load_verify_locations(cafile=verify)
    elif not _system_store():
        try:
            import certifi
        except ImportError:
            pass  # nothing to trust: the handshake fails, and says so
        else:
            context.load_verify_locations(cafile=certifi.where())
    if settings.cert is not None:
        with _unusable("VAULT_CLIENT_CERT / VAULT_CLIENT_KEY", settings.cert[0]):
            context.load_cert_chain(*settings.cert)
    return context


@contextlib.contextmanager
def _unusable(setting: str, path: str) -> Iterator[None]:
    """A certificate file that cannot be loaded is a setting to fix (78), not a store
    to retry; the message names the file, never what it holds."""
    try:
        yield
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or \
            type(exc).__name__
        raise ConfigError(f"cannot use {path!r} ({reason})",
                          hint=f"check {setting}: a PEM file (or a folder of them)") from None


def _system_store() -> bool:
    paths = ssl.get_default_verify_paths()
    return bool(paths.cafile and os.path.isfile(paths.cafile)) or bool(
        paths.capath and os.path.isdir(paths.capath) and os.listdir(paths.capath)
    )


class _Proxy:
    __slots__ = ("authorization", "host", "port")

    def __init__(self, host: str, port: int, authorization: str | None) -> None:
        self.host, self.port, self.authorization = host, port, authorization


def _proxy(url: str | None) -> _Proxy | None:
    """The proxy of an ``HTTPS_PROXY``/``HTTP_PROXY`` setting (``http://[user:pw@]host:port``)."""
    if not url:
        return None
    if "://" not in url:
        url = "http://" + url  # as curl and requests read a bare host:port
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        parts, port = None, 0
    if parts is None or parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"the proxy {safe_address(url)!r} is not an http:// proxy",
            hint="envwrap reaches Vault through an http:// proxy (CONNECT for https://)",
        )
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return _Proxy(parts.hostname, port, authorization)


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    except ValueError:
        return None
    return scheme, (parts.hostname or "").lower(), port


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection may be used: nothing to read on it (a
    readable idle socket is one the server closed, or sent something unasked)."""
    if conn.sock is None:
        return False
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return not poller.poll(0)


def _read_capped(response: http.client.HTTPResponse, addr: str) -> bytes:
    """The body of ``response``, refused beyond :data:`MAX_SECRET_BYTES`."""
    too_large = ReplyRefused(
        f"the reply from {safe_address(addr)} is larger than {MAX_SECRET_BYTES} bytes",
        hint="a Vault reply holding a secret is far smaller; is VAULT_ADDR a Vault server?",
    )
    declared = response.getheader("Content-Length") or ""
    if declared.isdigit() and int(declared) > MAX_SECRET_BYTES:
        raise too_large
    data = response.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise too_large
    return data


def _errors(headers: Headers, reply: bytes) -> tuple[str, ...]:
    """Vault's ``errors`` list of an error reply (for decisions, never for messages)."""
    if not (headers.get("Content-Type") or "").startswith("application/json"):
        return ()
    try:
        errors = json.loads(reply).get("errors")
    except (ValueError, AttributeError):
        return ()
    return tuple(str(e) for e in errors) if isinstance(errors, list) else ()


# -- reading replies --------------------------------------------------------------------


def body(response: Any) -> Mapping[str, Any]:
    """The JSON object of a 2xx reply."""
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


@functools.lru_cache(maxsize=1024)
def quoted(path: str) -> str:
    """``path`` for a request target; remembered, as a watcher asks for the same every poll."""
    return quote(path, safe="/-_.~@:+,=")
