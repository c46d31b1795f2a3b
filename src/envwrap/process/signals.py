"""Where the supervisor's loop takes its signals from, one at a time.

tini's design: every signal envwrap catches is *blocked* in the main thread,
before any thread exists (threads inherit the mask, so the kernel can deliver
them to no thread), and the loop takes them one at a time with
``sigwaitinfo`` -- or ``sigtimedwait`` while something has a deadline. Each is
handled once, in the order the kernel queues them (arrival order; lowest
number first among signals pending at the same moment -- signal(7)). Handlers
would not do: when several signals are pending, Linux stacks their handler
frames, so they would run in reverse order. Other threads wake the loop with a
SIGCHLD sent to the main thread (``pthread_kill``), which the loop takes as
"reap, then look at the queue". Idle, the loop sleeps in one ``sigwaitinfo``:
no polling, no CPU.

Faults (SIGSEGV, SIGABRT, ... -- :data:`posix.FAULTS`), SIGPIPE and SIGXFSZ
are blocked and taken too, so that one another process sends (``kill -SEGV``, ``si_code`` SI_USER,
SI_QUEUE or SI_TKILL) is forwarded to the program, as dumb-init does. One the
kernel raised for envwrap itself never waits in the queue (a real fault is
delivered even when blocked); one that does arrive here with a kernel
``si_code``, or that envwrap sent itself, ends envwrap by its default action
-- a core dump -- as it would have without the block (docs/SECURITY.md).
envwrap's own SIGPIPE and SIGXFSZ (a write to a closed pipe, a file over
RLIMIT_FSIZE) carry its own PID, and are dropped: the write fails with EPIPE
or EFBIG, as when they are ignored.

Where ``sigwaitinfo`` does not exist (macOS), Python handlers write to a
wakeup pipe instead, and the loop polls it (:class:`WakeupPipe`); there the
faults keep their defaults (a Python-level handler would return to the
faulting instruction forever), so ``kill -SEGV`` ends envwrap, as in tini.

The signals stay blocked once the loop is closed: envwrap is about to exit,
and a late SIGTERM must not replace the program's exit code.
"""

from __future__ import annotations

import _thread
import os

from envwrap.process import posix

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable
    from types import FrameType

    Done = Callable[[object], None]
else:
    import _signal

__all__ = ["Inbox", "SignalWait", "TakenSignals", "WakeupPipe", "signal_source"]


#: si_code values of a signal that a process sent (kill, sigqueue, tgkill):
#: SI_USER, SI_QUEUE, SI_TKILL (<asm-generic/siginfo.h>); the kernel's own
#: are positive (SEGV_MAPERR, BUS_ADRERR, SI_KERNEL...)
_SENT_CODES = frozenset((0, -1, -6))


def sent_by_another_process(info: _signal.struct_siginfo) -> bool:
    """Whether a signal came from ``kill``/``sigqueue`` of another process."""
    return info.si_code in _SENT_CODES and info.si_pid != os.getpid()


def die_of(signum: int) -> None:
    """End envwrap by ``signum``'s default action (a core dump for a fault)."""
    _signal.signal(signum, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, (signum,))
    _signal.raise_signal(signum)
    os.abort()  # pragma: no cover -- the default action of a fault does not return


class SignalWait:
    """Signals blocked, taken one at a time with sigwaitinfo(2) (Linux, BSDs).

    ``faults`` (a subset of :data:`posix.FAULTS`) and ``own`` (SIGPIPE and
    SIGXFSZ, :data:`posix.ENVWRAP_IGNORES`) are taken as well, and returned only
    when another process sent them. A fault of envwrap's own ends it; a SIGPIPE
    or SIGXFSZ of its own (the kernel sends them to the writer itself, with its
    own PID, and the write fails with EPIPE or EFBIG) is dropped.
    """

    def __init__(self, signals: frozenset[int], faults: frozenset[int] = frozenset(),
                 own: frozenset[int] = frozenset()) -> None:
        self.faults = faults
        self.own = own
        self.signals = signals | faults | own
        self.main = _thread.get_ident()
        _signal.pthread_sigmask(_signal.SIG_BLOCK, self.signals)

    def wait(self, timeout: float | None) -> list[int]:
        """Block until a signal (or ``timeout`` seconds); CPython retries on EINTR."""
        if timeout is None:
            info: _signal.struct_siginfo | None = _signal.sigwaitinfo(self.signals)
        else:
            info = _signal.sigtimedwait(self.signals, timeout)
        if info is None:
            return []
        signum = info.si_signo
        if (signum in self.faults or signum in self.own) and not sent_by_another_process(info):
            if signum in self.faults:
                die_of(signum)
            return []
        return [signum]

    def wake(self) -> None:
        """From any thread: SIGCHLD, pending on the main thread, ends its wait."""
        _signal.pthread_kill(self.main, _signal.SIGCHLD)

    def close(self) -> None:
        """Nothing: the signals stay blocked (see the module's docstring)."""


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler of :class:`WakeupPipe`: the pipe does the work."""


class WakeupPipe:
    """Where there is no sigwaitinfo (macOS): handlers and :func:`signal.set_wakeup_fd`.

    CPython's C handler writes the signal number to the pipe, a zero byte is a
    wake-up from another thread. Order among signals pending at once is not
    kept (the handler frames stack), and a signal that arrives while the loop is
    busy is still taken.
    """

    def __init__(self, signals: frozenset[int], faults: frozenset[int] = frozenset(),
                 own: frozenset[int] = frozenset()) -> None:
        # ``faults`` keep their defaults here, ``own`` stay ignored (see the
        # module's docstring).
        # Only blocked signals are safe from envwrap's own terminal I/O (see
        # posix.TERMINAL_IO); here nothing is blocked, so those two stay ignored.
        for signum in signals & posix.TERMINAL_IO:
            _signal.signal(signum, _signal.SIG_IGN)
        signals = signals - posix.TERMINAL_IO
        self.read_fd, self.write_fd = os.pipe()  # O_CLOEXEC (PEP 446)
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)  # set_wakeup_fd requires it
        for signum in signals:
            _signal.signal(signum, _ignore_signal)
        _signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)

    def wait(self, timeout: float | None) -> list[int]:
        import select

        poller = select.poll()  # not select(): it fails on fds over 1023
        poller.register(self.read_fd, select.POLLIN)
        if not poller.poll(None if timeout is None else int(timeout * 1000) + 1):
            return []
        data = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return [byte for byte in data if byte]

    def wake(self) -> None:
        try:  # noqa: SIM105 -- contextlib would cost start-up time
            os.write(self.write_fd, b"\0")
        except BlockingIOError:
            pass  # full of unread wake-ups already

    def close(self) -> None:
        _signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self.write_fd)


def signal_source(
    signals: frozenset[int], faults: frozenset[int] = frozenset(),
    own: frozenset[int] = frozenset(),
) -> SignalWait | WakeupPipe:
    """sigwaitinfo where it exists; the wakeup pipe elsewhere (a test forces it here)."""
    if hasattr(_signal, "sigtimedwait"):
        return SignalWait(signals, faults, own)
    return WakeupPipe(signals, faults, own)


class TakenSignals:
    """Every forwardable signal envwrap was not started with ignored, taken for the loop.

    Construct on the main thread before any other thread starts (threads
    inherit the blocked signals only if started afterwards); the
    :class:`~envwrap.process.supervisor.Supervisor` does it itself unless given
    one. ``slate`` is what the program must start with, captured first.
    SIGPIPE and SIGXFSZ stay ignored as well as taken (see :class:`SignalWait`).
    """

    __slots__ = ("slate", "source")

    def __init__(self) -> None:
        self.slate = slate = posix.CleanSlate()
        for signum in posix.ENVWRAP_IGNORES:
            _signal.signal(signum, _signal.SIG_IGN)
        caught = posix.FORWARDABLE - slate.ignored_at_start
        if _signal.SIGCHLD in slate.ignored_at_start:
            # SIGCHLD ignored makes the kernel reap children itself, exit
            # statuses lost (waitpid(2), NOTES); the program still gets it ignored
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            caught |= {_signal.SIGCHLD}
        if getattr(_thread, "_count", lambda: 0)():
            from envwrap import log

            log.debug("threads started before the supervisor may take signals meant for it")
        self.source = signal_source(caught, posix.FAULTS - slate.ignored_at_start,
                                    posix.ENVWRAP_IGNORES)


class Inbox:
    """Requests from other threads, queued under a lock; each one wakes the loop.

    Once closed, a request is not queued: its ``done`` gets None at once.
    """

    def __init__(self, source: SignalWait | WakeupPipe) -> None:
        self.source = source
        self._lock = _thread.allocate_lock()
        self._requests: list[tuple[str, object, Done | None]] = []
        self._closed = False

    def put(self, kind: str, value: object, done: Done | None) -> None:
        with self._lock:
            if not self._closed:
                self._requests.append((kind, value, done))
                self.source.wake()
                return
        if done is not None:
            done(None)

    def take(self) -> list[tuple[str, object, Done | None]]:
        with self._lock:
            requests, self._requests = self._requests, []
        return requests

    def close(self) -> list[Done]:
        """No more requests; returns the callbacks of those never taken."""
        with self._lock:
            self._closed = True
            requests, self._requests = self._requests, []
            self.source.close()
        return [done for _kind, _value, done in requests if done is not None]
