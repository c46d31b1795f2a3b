"""``--ready log:REGEX``: a generation is ready once it prints a matching line.

Any program can say "ready" this way with no code and no helper ("listening on
port 3000"); Node, for one, cannot send the unix datagram that ``notify`` needs.

Each generation gets pipes of its own on stdout and stderr, so that a line is
attributed to the generation that printed it, during a handoff too (two run at
once). One relay thread per stream copies every byte on at once, unchanged, to
where the program's output would have gone otherwise -- envwrap's own stdout
and stderr, or the ``--mask`` relay, which then masks it as before -- and, until
the generation is ready, also looks at each complete line: decoded as UTF-8
(bad bytes replaced), searched with :func:`re.search`. A line longer than
:data:`LONGEST_LINE` bytes is looked at in pieces of that size.

Like ``--mask``, this makes the program's stdout and stderr pipes rather than a
terminal (docs/rotation.md).
"""

from __future__ import annotations

import errno
import os
import threading

from envwrap.process.checks import OutputTap, ReadyCheck

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable

    from envwrap.process.checks import Report, Stdio

__all__ = ["LONGEST_LINE", "LogCheck", "PipeTap"]

#: the most bytes of one line that are kept for matching
LONGEST_LINE = 64 * 1024
#: how long :meth:`LogCheck.close` waits, in all, for the relays to drain
DRAIN_TIMEOUT = 5.0



class PipeTap(OutputTap):
    """The pipes of one generation: :attr:`stdio` for the spawn, then :meth:`started`."""

    def __init__(self, check: LogCheck, downstream: Stdio) -> None:
        self._check = check
        self._downstream = (downstream[1] if downstream[1] is not None else 1,
                            downstream[2] if downstream[2] is not None else 2)
        out_read, out_write = os.pipe()  # O_CLOEXEC (PEP 446); spawn dup2s the write ends
        err_read, err_write = os.pipe()
        self._reads = (out_read, err_read)
        self._writes = (out_write, err_write)
        #: what the generation gets on 0, 1, 2
        self.stdio: Stdio = (downstream[0], out_write, err_write)

    def started(self, pid: int) -> None:
        """The generation ``pid`` runs: relay its output (the parent's write ends close)."""
        for fd in self._writes:
            os.close(fd)
        for read, write, name in zip(self._reads, self._downstream, ("stdout", "stderr"),
                                     strict=True):
            self._check.relay(pid, read, write, name)

    def abandon(self) -> None:
        """The spawn failed: close every end."""
        for fd in (*self._reads, *self._writes):
            os.close(fd)


class LogCheck(ReadyCheck):
    """Ready once a line of the generation's stdout or stderr matches ``pattern``."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self._lock = threading.Lock()
        self._watched: dict[int, Report] = {}
        #: generations that printed the line before anyone watched them
        self._matched: set[int] = set()
        self._relays: list[threading.Thread] = []

    def tap(self, stdio: Stdio) -> PipeTap:
        return PipeTap(self, stdio)

    def watch(self, pid: int, report: Report) -> Callable[[], None]:
        with self._lock:
            early = pid in self._matched
            self._matched.discard(pid)
            if not early:
                self._watched[pid] = report

        def cancel() -> None:
            with self._lock:
                self._watched.pop(pid, None)

        if early:
            report(pid)
        return cancel

    def close(self) -> None:
        """Let the relays drain what the generations wrote (bounded: a grandchild may
        keep a pipe open for ever)."""
        import time

        with self._lock:
            self._watched.clear()
            relays, self._relays = self._relays, []
        end = time.monotonic() + DRAIN_TIMEOUT
        for relay in relays:
            relay.join(max(0.0, end - time.monotonic()))

    def relay(self, pid: int, source: int, destination: int, name: str) -> None:
        """Start copying ``source`` to ``destination`` for generation ``pid``."""
        thread = threading.Thread(target=self._run, args=(pid, source, destination),
                                  name=f"envwrap-ready-log-{name}-{pid}", daemon=True)
        with self._lock:
            self._relays = [relay for relay in self._relays if relay.is_alive()]
            self._relays.append(thread)
        thread.start()

    def _run(self, pid: int, source: int, destination: int) -> None:
        pending = b""
        looking = True
        try:
            while chunk := os.read(source, 65536):
                if not _write_all(destination, chunk):
                    return  # nobody reads envwrap's output: the program gets EPIPE next
                if not looking:
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) >= LONGEST_LINE:
                    lines.append(pending)
                    pending = b""
                if any(self.pattern.search(line.decode("utf-8", "replace")) for line in lines):
                    looking = False
                    pending = b""
                    self._found(pid)
        except OSError:
            return
        finally:
            os.close(source)
            with self._lock:
                self._matched.discard(pid)

    def _found(self, pid: int) -> None:
        with self._lock:
            report = self._watched.pop(pid, None)
            if report is None:
                self._matched.add(pid)
        if report is not None:
            report(pid)


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data``; False when the destination is gone or broken."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            # a shared stdout that somebody made non-blocking: wait, lose nothing
            import select

            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll()
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF, errno.EIO, errno.ENOSPC, errno.EINVAL,
                             errno.ECONNRESET):
                return False
            raise
    return True
