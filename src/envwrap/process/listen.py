"""``--listen``: sockets envwrap binds once and hands to every generation.

The protocol is systemd's socket activation (sd_listen_fds(3)): the program
finds its sockets on descriptors 3, 4, ... with ``LISTEN_FDS=N``,
``LISTEN_PID=<its own PID>`` and ``LISTEN_FDNAMES=a:b``, so Node's
``server.listen({fd: 3})``, gunicorn ``--bind fd://3``, uvicorn ``--fd 3`` and
go-systemd's ``activation`` package work unchanged. envwrap keeps its own copy
of every socket for as long as it runs: connections that arrive while no
generation accepts wait in the backlog instead of being refused.

``LISTEN_PID`` must be the PID of the process that reads it, which is only
known once the child exists: :func:`envwrap.process.posix.spawn` writes it in the
forked child, exec mode writes envwrap's own PID (exec keeps it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from envwrap.errors import ConfigError
from envwrap.values import parse_host_port

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Listener", "listen_environment", "open_listeners", "parse_address"]

class Address:
    """A parsed ``--listen`` value: family, what bind() takes, and a name."""

    __slots__ = ("family", "name", "sockaddr", "text")

    def __init__(self, text: str, family: int, sockaddr: str | tuple[str, int], name: str) -> None:
        self.text = text
        self.family = family
        self.sockaddr = sockaddr
        self.name = name

    @property
    def abstract(self) -> bool:
        """A Linux abstract unix socket (``unix:@NAME``): no file on disk."""
        return isinstance(self.sockaddr, str) and self.sockaddr.startswith("\0")


class Listener:
    """One bound, listening socket; for a unix socket, the file it created."""

    __slots__ = ("address", "path", "sock", "stat_key")

    def __init__(self, address: Address, sock: socket.socket) -> None:
        self.address = address
        self.sock = sock
        self.path: str | None = None
        self.stat_key: tuple[int, int] | None = None
        if address.family == socket.AF_UNIX and not address.abstract:
            assert isinstance(address.sockaddr, str)
            self.path = address.sockaddr
            info = os.stat(self.path)
            self.stat_key = (info.st_dev, info.st_ino)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        """Close the socket; remove the unix socket file if it is still the one we made."""
        self.sock.close()
        if self.path is None:
            return
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self.stat_key:
                os.unlink(self.path)
        except OSError:
            pass  # gone already, or replaced by somebody else's: not ours to remove


def _name_of(text: str) -> str:
    """``LISTEN_FDNAMES`` entries: at most 255 characters, no ``:`` (sd_pid_notify_with_fds(3))."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    while "__" in cleaned:
        cleaned = cleaned.replace("__", "_")
    return cleaned.strip("_")[:255] or "listen"


def parse_address(text: str, source: str = "--listen") -> Address:
    """``HOST:PORT``, ``:PORT``, ``[IPV6]:PORT``, ``unix:PATH`` or ``unix:@NAME``
    (Linux abstract namespace) -> :class:`Address`.

    ``:PORT`` means every interface: IPv6 and IPv4 on one dual-stack socket
    where the system has IPv6, IPv4 only otherwise. A host name is looked up and
    its first address is bound. Raises :class:`ConfigError` naming the value.
    """
    value = text.strip()
    where = f"{source} {value!r}"
    if value.startswith("unix:"):
        path = value[len("unix:"):]
        if not path or path == "@":
            raise ConfigError(f"{where}: unix: needs a path")
        if path.startswith("@"):  # abstract namespace, as systemd writes it (unix(7))
            return Address(value, socket.AF_UNIX, "\0" + path[1:], _name_of(value))
        return Address(value, socket.AF_UNIX, os.path.abspath(path), _name_of(value))
    if ":" not in value:
        raise ConfigError(f"{where}: expected HOST:PORT, :PORT, [IPV6]:PORT or unix:PATH")
    host, port = parse_host_port(value, source)
    if value.startswith("["):
        return Address(value, socket.AF_INET6, (host, port), _name_of(value))
    if not host:
        family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
        anywhere = "::" if family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104 -- asked for
        return Address(value, family, (anywhere, port), _name_of(value))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot resolve {host!r} ({exc.strerror or exc})") from None
    family, _type, _proto, _canon, sockaddr = infos[0]
    return Address(value, family, (str(sockaddr[0]), int(sockaddr[1])), _name_of(value))


def _bind(address: Address) -> socket.socket:
    sock = socket.socket(address.family, socket.SOCK_STREAM)  # O_CLOEXEC (PEP 446)
    try:
        if address.family != socket.AF_UNIX:
            # a restarted envwrap must not wait out TIME_WAIT of the last run
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if address.family == socket.AF_INET6 and address.sockaddr[0] == "::":
            # dual-stack: IPv4 clients too (bindv6only=1 would make it IPv6 only)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if address.family == socket.AF_UNIX and not address.abstract:
            _remove_stale(address)
        sock.bind(address.sockaddr)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale(address: Address) -> None:
    """Remove a unix socket file left by a previous run, and nothing else.

    Only a *socket* nobody answers on is removed: a regular file (a typo in the
    path) or a socket another process still serves is an error, as with
    systemd's ``RemoveOnStop`` counterpart.
    """
    assert isinstance(address.sockaddr, str)
    path = address.sockaddr
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(17, "the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: its server is gone
        return
    except OSError:
        return  # let bind() report what is wrong
    finally:
        probe.close()
    raise OSError(98, "another process is listening on it")


def open_listeners(texts: Sequence[str], source: str = "--listen") -> list[Listener]:
    """Bind and listen on every address.

    Raises :class:`ConfigError` (78) naming the address that cannot be bound.
    """
    listeners: list[Listener] = []
    try:
        for text in texts:
            address = parse_address(text, source)
            try:
                sock = _bind(address)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise ConfigError(f"{source} {address.text!r}: cannot listen ({reason})") from None
            listeners.append(Listener(address, sock))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def listen_environment(listeners: Sequence[Listener]) -> dict[str, str]:
    """``LISTEN_FDS`` and ``LISTEN_FDNAMES`` (``LISTEN_PID`` is set in the child itself)."""
    if not listeners:
        return {}
    return {
        "LISTEN_FDS": str(len(listeners)),
        "LISTEN_FDNAMES": ":".join(listener.address.name for listener in listeners),
    }
