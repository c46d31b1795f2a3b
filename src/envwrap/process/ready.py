"""``--ready``: when a generation of the program counts as ready to serve.

A check watches one generation (a PID) and reports, once, that it is ready.
It never decides failure: the supervisor owns the deadline (``--ready-timeout``)
and sees the generation exit. Reports arrive on whatever thread noticed them
and must be passed on thread-safely (the supervisor queues them).

- ``notify``: sd_notify(3). envwrap creates one datagram socket per run, in the
  abstract namespace (nothing on disk to clean up or to be swapped), and sets
  ``NOTIFY_SOCKET`` for every generation. A ``READY=1`` counts only when the
  kernel-attested sender (``SO_PASSCRED``, unix(7)) is the generation's main
  process or one of its descendants (its parent chain leads to the main
  process), running as the main process's user or envwrap's -- the old
  generation, a process that joins the generation's process group
  (``setpgid`` works from anywhere in the same session), or any other process
  that finds the socket cannot vouch for the new one (docs/SECURITY.md,
  "Readiness"). Like systemd, a sender that has already exited when its
  message is read cannot be attributed and is ignored.
- ``http://HOST:PORT/PATH``, ``https://...``: a GET answers 2xx or 3xx. HTTPS
  does not verify the certificate: this probes the program's own listener,
  as a Kubernetes probe does.
- ``tcp://HOST:PORT``: a connection is accepted.
- a duration (``2s``): the generation has run that long.
- ``log:REGEX``: the generation printed a matching line
  (:mod:`~envwrap.process.ready_log`).
"""

from __future__ import annotations

import os
import socket
import threading

from envwrap import log
from envwrap.errors import ConfigError
from envwrap.process.checks import OutputTap, ReadyCheck
from envwrap.values import parse_duration, parse_host_port

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from envwrap.process.checks import Report

__all__ = ["OutputTap", "ReadyCheck", "parse_check"]

#: how often a probe retries, at first and at most (it backs off in between)
FIRST_PROBE, LAST_PROBE = 0.05, 1.0
#: how long one probe may take
PROBE_TIMEOUT = 2.0


class _Probing(ReadyCheck):
    """A check that polls something from a thread until it passes or is cancelled."""

    def watch(self, pid: int, report: Report) -> Callable[[], None]:
        cancelled = threading.Event()

        def loop() -> None:
            delay = FIRST_PROBE
            while not cancelled.is_set():
                if self.probe(cancelled):
                    if not cancelled.is_set():
                        report(pid)
                    return
                cancelled.wait(delay)
                delay = min(delay * 2, LAST_PROBE)

        threading.Thread(target=loop, name=f"envwrap-ready-{pid}", daemon=True).start()
        return cancelled.set

    def probe(self, cancelled: threading.Event) -> bool:
        raise NotImplementedError


class DurationCheck(_Probing):
    """Ready once the generation has run ``seconds`` (its exit fails it first)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def probe(self, cancelled: threading.Event) -> bool:
        return not cancelled.wait(self.seconds)


class TcpCheck(_Probing):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def probe(self, cancelled: threading.Event) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=PROBE_TIMEOUT):
                return True
        except OSError:
            return False


class HttpCheck(_Probing):
    def __init__(self, url: str, secure: bool, host: str, port: int, path: str) -> None:
        self.url, self.secure, self.host, self.port, self.path = url, secure, host, port, path

    def probe(self, cancelled: threading.Event) -> bool:
        import http.client

        connection: http.client.HTTPConnection
        if self.secure:
            import ssl

            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the program's own listener (see above)
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=PROBE_TIMEOUT, context=context
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=PROBE_TIMEOUT)
        try:
            connection.request("GET", self.path, headers={"User-Agent": "envwrap-ready"})
            status = connection.getresponse().status
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
        return 200 <= status < 400


class NotifyCheck(ReadyCheck):
    """sd_notify ``READY=1`` from the generation itself (see the module docstring)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._name = ""
        self._lock = threading.Lock()
        self._watched: dict[int, Report] = {}

    def environment(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self._name}

    def open(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # O_CLOEXEC (PEP 446)
        # abstract name: a leading NUL, shown as "@" in NOTIFY_SOCKET (sd_notify(3))
        token = os.urandom(8).hex()
        address = f"\0envwrap/{os.getpid()}/{token}"
        try:
            sock.bind(address)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._name = "@" + address[1:]
        threading.Thread(target=self._receive, name="envwrap-notify", daemon=True).start()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        with self._lock:
            self._watched.clear()
        if sock is not None:
            try:  # noqa: SIM105 -- wakes the receiving thread's recvmsg
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def watch(self, pid: int, report: Report) -> Callable[[], None]:
        with self._lock:
            self._watched[pid] = report

        def cancel() -> None:
            with self._lock:
                self._watched.pop(pid, None)

        return cancel

    def _receive(self) -> None:
        sock = self._sock
        assert sock is not None
        space = socket.CMSG_SPACE(12)  # struct ucred: pid, uid, gid (3 x int32)
        while True:
            try:
                data, ancillary, _flags, _address = sock.recvmsg(4096, space)
            except OSError:
                return  # closed
            if not data and self._sock is None:
                return
            sender = _sender(ancillary)
            if sender is None or b"READY=1" not in data.split(b"\n"):
                continue
            with self._lock:
                watched = dict(self._watched)
            for pid, report in watched.items():
                if _belongs(*sender, pid):
                    report(pid)
                    break
            else:
                log.debug("ignored READY=1 from a process of no generation", pid=sender[0])


def _sender(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """The sender's PID and uid, as the kernel attests them (struct ucred)."""
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= 12:
            return (int.from_bytes(payload[:4], "little", signed=True),
                    int.from_bytes(payload[4:8], "little"))
    return None


def _status(pid: int) -> tuple[int, int] | None:
    """The parent PID and real uid of ``pid`` (/proc/PID/status), or None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            lines = status.read().splitlines()
    except OSError:
        return None
    fields = dict(line.partition(":")[::2] for line in lines)
    try:
        return int(fields["PPid"]), int(fields["Uid"].split()[0])
    except (KeyError, IndexError, ValueError):
        return None


def _belongs(sender: int, uid: int, pid: int) -> bool:
    """Whether ``sender`` (running as ``uid``) is generation ``pid`` or its descendant,
    running as the generation's user or envwrap's."""
    main = _status(pid)
    if main is None or uid not in (main[1], os.getuid()):
        return False
    current = sender
    for _ in range(64):
        if current == pid:
            return True
        found = _status(current)
        if found is None or found[0] <= 1 or found[0] == os.getpid():
            return False  # gone, an orphan, or not below the generation: not attributed
        current = found[0]
    return False


def parse_check(text: str, source: str = "--ready") -> ReadyCheck:
    """``notify``, ``http(s)://HOST:PORT/PATH``, ``tcp://HOST:PORT``, ``log:REGEX`` or a duration.

    Raises :class:`ConfigError` (78) naming ``source`` for anything else.
    """
    value = text.strip()
    if value.startswith("log:"):
        import re

        try:
            pattern = re.compile(value[len("log:"):])
        except re.error as exc:
            raise ConfigError(f"{source}: {value!r} is not a regular expression: {exc}") from None
        if not pattern.pattern:
            raise ConfigError(f"{source}: log: needs a regular expression, e.g. "
                              "'log:listening on'")
        from envwrap.process.ready_log import LogCheck

        return LogCheck(pattern)
    if value == "notify":
        if not hasattr(socket, "SO_PASSCRED"):
            raise ConfigError(f"{source}: notify needs Linux (the sender's PID is checked "
                              "with SO_PASSCRED); use a duration or a probe here")
        return NotifyCheck()
    lowered = value.lower()
    if lowered.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        secure = parts.scheme.lower() == "https"
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError:
            raise ConfigError(f"{source}: {value!r} has a bad port") from None
        if not parts.hostname:
            raise ConfigError(f"{source}: {value!r} names no host")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return HttpCheck(value, secure, parts.hostname, port, path)
    if lowered.startswith("tcp://"):
        try:
            host, port = parse_host_port(value[len("tcp://"):], source, port_zero=False)
        except ConfigError:
            host = ""
        if not host:
            raise ConfigError(f"{source}: {value!r} is not tcp://HOST:PORT") from None
        return TcpCheck(host, port)
    try:
        seconds = parse_duration(value, source)
    except ConfigError:
        raise ConfigError(
            f"{source}: {value!r} is not a check (notify, http://HOST:PORT/PATH, "
            "https://..., tcp://HOST:PORT, log:REGEX or a duration such as 2s)"
        ) from None
    return DurationCheck(seconds)
