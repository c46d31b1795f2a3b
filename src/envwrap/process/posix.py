"""The OS layer of supervise mode: spawn, prctl, reap, terminal hand-off.

Everything here is a thin, documented wrapper over one POSIX or Linux call, so
that :mod:`envwrap.process.child` and :mod:`envwrap.process.supervisor` read as policy. Nothing
here knows about secrets; the environment is an opaque mapping.

Start-up cost matters (``envwrap --init`` should start within 1.5x of exec
mode), so this module imports only C modules: ``_signal`` rather than
``signal`` (which imports :mod:`enum`), no :mod:`subprocess`; ``prctl(2)``
comes from :mod:`envwrap.process.prctl`.
"""

from __future__ import annotations

import errno
import os

from envwrap.process.launch import PYTHON_IGNORES, inherited_descriptors, place_passed
from envwrap.process.prctl import PR_SET_PDEATHSIG, load_prctl

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only; `typing` costs start-up time
    import signal as _signal  # the stubs of the C module below
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import NoReturn
else:
    import _signal  # not `signal`, which imports enum

__all__ = [
    "ENVWRAP_IGNORES",
    "FAULTS",
    "FORWARDABLE",
    "JOB_CONTROL",
    "TERMINAL_IO",
    "CleanSlate",
    "controlling_terminal",
    "descriptor_ceiling",
    "exit_code_of",
    "reap",
    "spawn",
    "take_terminal",
    "terminal_owner",
]

SIGKILL = _signal.SIGKILL
SIG_DFL = _signal.SIG_DFL
SIG_IGN = _signal.SIG_IGN

#: Faults: the signals the kernel sends a process for its own bad instruction or
#: access. envwrap never gives them a handler, so a bug in envwrap still dumps
#: core; where it can take signals with sigwaitinfo it blocks them too, and
#: forwards one that *another process* sent (``kill -SEGV``), as dumb-init does:
#: the kernel delivers a real fault even when it is blocked, unblocking it and
#: resetting it to its default action first (force_sig_info in kernel/signal.c),
#: so blocking never turns a real fault into a queued one
#: (:mod:`~envwrap.process.signals` tells the two apart by ``si_code``).
FAULTS = frozenset(
    getattr(_signal, name)
    for name in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT")
    if hasattr(_signal, name)
)
#: envwrap ignores these for itself: SIGPIPE and SIGXFSZ, as CPython does (a
#: write fails with EPIPE/EFBIG instead). Where signals are taken with
#: sigwaitinfo they are also blocked and taken, and forwarded only when another
#: process sent them (as dumb-init does): a broken pipe in envwrap's own writes
#: (a log line, a --mask relay) raises one that carries envwrap's own PID, which
#: is dropped (:class:`envwrap.process.signals.SignalWait`). The program gets
#: their defaults back, as in exec mode.
ENVWRAP_IGNORES = PYTHON_IGNORES
#: job control: forwarded to the program's group, then envwrap
#: stops itself. SIGTTIN and SIGTTOU were ignored by envwrap because it runs in
#: a background group once the program owns the terminal, and tcsetpgrp(3) or a
#: write to the terminal from a background group raises SIGTTOU. *Blocked* is
#: as good as ignored there -- the kernel lets the call through and generates
#: no signal (tty_check_change: "ignored or blocked") -- while a SIGTTOU that
#: somebody sends is still queued for sigwaitinfo (an ignored one is discarded).
JOB_CONTROL = frozenset(
    getattr(_signal, name) for name in ("SIGTSTP", "SIGTTIN", "SIGTTOU") if hasattr(_signal, name)
)
#: the two of :data:`JOB_CONTROL` that envwrap's own terminal I/O can raise;
#: where signals cannot be blocked and waited for (the wakeup-pipe fallback,
#: macOS) they stay ignored, as a caught one would make CPython retry the
#: call forever (PEP 475)
TERMINAL_IO = frozenset(
    getattr(_signal, name) for name in ("SIGTTIN", "SIGTTOU") if hasattr(_signal, name)
)
_UNCATCHABLE = frozenset((_signal.SIGKILL, _signal.SIGSTOP))


def _forwardable() -> frozenset[int]:
    found = set()
    for signum in _signal.valid_signals():
        number = int(signum)
        if number in _UNCATCHABLE or number in FAULTS or number in ENVWRAP_IGNORES:
            continue
        found.add(number)
    return frozenset(found)


#: every signal envwrap catches in supervise mode (SIGCHLD included, which it
#: never forwards); glibc reserves 32 and 33 for its threads, so valid_signals()
#: already leaves them out
FORWARDABLE = _forwardable()

# --- the clean slate the child starts from ----------------------------------------------


class CleanSlate:
    """The signal mask and dispositions envwrap was started with, for its children.

    Captured before supervise mode changes anything. ``dispositions`` maps
    every signal the supervisor may touch to what the child must get back:
    SIG_IGN where envwrap was started with the signal ignored (``nohup``, a
    background job of a non-interactive shell), SIG_DFL otherwise -- including
    SIGPIPE and SIGXFSZ, which CPython ignores for itself whatever it was given.
    """

    __slots__ = ("dispositions", "ignored_at_start", "mask")

    def __init__(self) -> None:
        # pthread_sigmask(3) with SIG_BLOCK and no signals only reads the mask
        self.mask: frozenset[int] = frozenset(
            int(s) for s in _signal.pthread_sigmask(_signal.SIG_BLOCK, ())
        )
        ignored = set()
        for number in FORWARDABLE | ENVWRAP_IGNORES | FAULTS:
            try:
                handler = _signal.getsignal(number)
            except (OSError, ValueError):
                continue
            if handler is SIG_IGN and number not in PYTHON_IGNORES:
                ignored.add(number)
        self.ignored_at_start: frozenset[int] = frozenset(ignored)
        self.dispositions: tuple[tuple[int, int], ...] = tuple(
            (number, SIG_IGN if number in ignored else SIG_DFL)
            for number in sorted(FORWARDABLE | ENVWRAP_IGNORES)
        )


# --- spawn ------------------------------------------------------------------------------


def exec_candidates(program: str, environment: Mapping[str, str]) -> list[bytes]:
    """The paths ``execvpe`` would try, searched in the *child's* PATH."""
    if os.sep in program:
        return [os.fsencode(program)]
    folders = environment.get("PATH", os.defpath).split(os.pathsep)
    return [os.fsencode(os.path.join(folder or os.curdir, program)) for folder in folders]


def spawn(
    argv: Sequence[str],
    environment: Mapping[str, str],
    slate: CleanSlate,
    *,
    stdio: tuple[int | None, int | None, int | None] = (None, None, None),
    terminal: int | None = None,
    death_signal: int = _signal.SIGKILL,
    passed: Sequence[int] = (),
    cwd: str | None = None,
) -> int:
    """Start ``argv`` in a new process group and return its PID.

    ``passed`` are descriptors (``--listen`` sockets) the child gets on 3, 4,
    ..., in that order, with ``LISTEN_PID`` set to its own PID in its
    environment (sd_listen_fds(3) checks it; only the child knows it).

    The child gets: its own process group (so that signals can go to all of it
    with killpg); the terminal ``terminal`` (a descriptor) as its foreground
    group, before it runs a single instruction of the program; ``death_signal``
    when envwrap dies (Linux); the fds of ``stdio`` on 0, 1, 2 where given, and
    no other descriptor; the signal mask and dispositions of ``slate``; the
    working folder ``cwd`` where given (envwrap's own is ``/`` by then).

    Raises :class:`OSError` with the ``execve`` errno when the program cannot
    be run (the caller maps it to 126/127); the failed child is reaped here.

    Why fork and not ``os.posix_spawn`` (vfork) or ``subprocess``:
    ``PR_SET_PDEATHSIG`` and the ``tcsetpgrp`` that must precede the program
    can only be done *in the child*, and neither posix_spawn nor subprocess
    (short of ``preexec_fn``, unsafe with threads) can run anything there.
    ``setpriv --pdeathsig`` could, but costs an extra exec, is missing from
    slim images, and leaves the race below open. So the child is forked here and
    runs a short, fixed path before ``execve``: no imports, no locks, no
    allocations it could deadlock on -- glibc's and musl's fork reset malloc's
    locks in the child, CPython holds the GIL and the import lock across
    fork, and everything the child calls (setpgid, tcsetpgrp, prctl through a
    function pointer resolved *before* the fork, getppid, dup2, close_range,
    sigaction, sigprocmask, execve) is a plain system call. Locks that watcher
    threads may hold at fork time (OpenSSL, the resolver) are never touched by
    the child. All signals are blocked across fork, so that a signal sent to
    the new child waits until it has the dispositions of the program, and no
    Python handler ever runs in it (on the wakeup-pipe fallback of the
    supervisor, its byte would land in envwrap's pipe, which the child shares).

    The death signal is tied to the *thread* that forks, not the process
    (prctl(2): "the parent thread"), so spawn only from the main thread, which
    lives as long as envwrap. It is cleared when the program is set-user-ID or
    has file capabilities, and it reaches the child only, not grandchildren:
    those are the supervisor's job (process group, subreaper, kill_tree).
    """
    candidates = exec_candidates(argv[0], environment)
    arguments = [os.fsencode(arg) for arg in argv]
    env_bytes = {os.fsencode(k): os.fsencode(v) for k, v in environment.items()}
    prctl = load_prctl() if death_signal else None
    parent = os.getpid()
    if passed:
        # copy on from here on; the ``LISTEN_PID`` entry is filled in by the child
        env_bytes[b"LISTEN_PID"] = b""
    error_read, error_write = os.pipe()  # O_CLOEXEC (PEP 446): EOF once exec succeeds
    ceiling = descriptor_ceiling()
    previous = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover -- the child; it leaves only through exec or _exit
            _child(candidates, arguments, env_bytes, slate, stdio=stdio, terminal=terminal,
                   prctl=prctl, death_signal=death_signal, parent=parent,
                   error_write=error_write, ceiling=ceiling, passed=tuple(passed), cwd=cwd)
    except BaseException:
        os.close(error_read)
        raise
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, previous)
        os.close(error_write)
    # setpgid in both parent and child, the classic job-control race fix
    # (setpgid(2), APUE 9.4): whoever runs first creates the group, so the
    # parent can signal the group as soon as spawn returns. EACCES: the child
    # has exec'd already (and has set it itself); ESRCH: it is gone already.
    try:  # noqa: SIM105 -- contextlib would cost start-up time
        os.setpgid(pid, pid)
    except OSError:
        pass
    report = b""
    try:
        while chunk := os.read(error_read, 16):
            report += chunk
    finally:
        os.close(error_read)
    if not report:
        return pid
    os.waitpid(pid, 0)  # the failed child; nobody else may see it
    number = int.from_bytes(report[:4], "little") or errno.ENOEXEC
    raise OSError(number, os.strerror(number), argv[0])


def _child(
    candidates: list[bytes],
    arguments: list[bytes],
    environment: dict[bytes, bytes],
    slate: CleanSlate,
    *,
    stdio: tuple[int | None, int | None, int | None],
    terminal: int | None,
    prctl: Callable[..., int] | None,
    death_signal: int,
    parent: int,
    error_write: int,
    ceiling: int,
    passed: tuple[int, ...] = (),
    cwd: str | None,
) -> NoReturn:  # pragma: no cover -- runs in the forked child
    number = errno.ENOEXEC
    try:
        os.setpgid(0, 0)
        if cwd is not None:
            os.chdir(cwd)
        if terminal is not None:
            # The child makes itself the terminal's foreground group, as tini
            # does, so that it can never read the terminal before owning it
            # (it would be stopped by SIGTTIN). SIGTTOU is ignored here.
            try:  # noqa: SIM105 -- no imports in the forked child
                os.tcsetpgrp(terminal, os.getpid())
            except OSError:
                pass  # ENOTTY, or no longer our terminal: run without it
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
            # The death signal fires only if the parent dies *after* prctl: if
            # envwrap died in between, we are an orphan already (prctl(2)).
            if os.getppid() != parent:
                os._exit(1)
        for target, fd in enumerate(stdio):
            if fd is not None and fd != target:
                os.dup2(fd, target)  # the copy on 0/1/2 is inheritable (dup2(2))
        first_closed = 3 + len(passed)
        if passed:
            # the error pipe moves along, out of the targets' way
            error_write = place_passed(passed, error_write, carry=error_write)
            environment[b"LISTEN_PID"] = b"%d" % os.getpid()
        # no descriptor beyond 0, 1, 2 (and the passed ones) -- except the CLOEXEC
        # error pipe, which exec closes; close_range(2) makes this one system call
        os.closerange(first_closed, error_write)
        os.closerange(error_write + 1, ceiling)
        for signum, disposition in slate.dispositions:
            _signal.signal(signum, disposition)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, slate.mask)
        saved = 0
        for path in candidates:
            try:
                os.execve(path, arguments, environment)
            except OSError as exc:  # the same choice as os.execvpe / a shell
                number = exc.errno or errno.ENOEXEC
                if number not in (errno.ENOENT, errno.ENOTDIR) and not saved:
                    saved = number
        if saved:
            number = saved
    except OSError as exc:
        number = exc.errno or errno.EIO
    finally:
        try:
            os.write(error_write, number.to_bytes(4, "little"))
        finally:
            os._exit(127)


def descriptor_ceiling() -> int:
    """One past the highest descriptor that may be open in this process.

    Not the soft RLIMIT_NOFILE alone (``sysconf(_SC_OPEN_MAX)``): a descriptor
    opened before the limit was lowered stays open above it (``exec 1500>f;
    ulimit -Sn 1024``), and would reach the program. So the highest one open
    now (``/proc/self/fd``) counts too; those a thread opens after the look are
    close-on-exec (PEP 446).
    """
    try:
        limit = os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        limit = 0
    return max(limit, 1024, max(inherited_descriptors(), default=2) + 1)


# --- reaping --------------------------------------------------------------------------


def reap(watch_stops: bool) -> tuple[list[tuple[int, int]], bool]:
    """Collect every child that changed state, without blocking.

    Returns ``(changes, more)``: the (pid, status) pairs, and whether any child
    is left at all (``waitpid`` gives ECHILD when none is). With
    ``watch_stops``, stopped and continued children are reported too
    (WUNTRACED, WCONTINUED) for job control. This must be the only place
    envwrap calls ``waitpid`` in supervise mode: a second caller would steal
    the main child's exit status.
    """
    options = os.WNOHANG
    if watch_stops:
        options |= os.WUNTRACED | os.WCONTINUED
    changes: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, options)
        except ChildProcessError:
            return changes, False
        if pid == 0:
            return changes, True
        changes.append((pid, status))


def exit_code_of(status: int) -> int:
    """A shell's view of a wait status: the exit code, or 128+N for signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


# --- terminal ---------------------------------------------------------------------------


def controlling_terminal(fds: Iterable[int] = (0, 1, 2)) -> int | None:
    """The first of ``fds`` that is envwrap's controlling terminal, or None.

    ``tcgetpgrp`` fails (ENOTTY) on a terminal that is not the caller's
    controlling terminal, so this also rules out a stray tty passed as stdout.
    Whether envwrap may hand it to the child is decided at each start, with
    :func:`terminal_owner`: a background job (``envwrap --init -- cmd &``) must
    not take the terminal from the shell.
    """
    for fd in fds:
        try:
            if os.isatty(fd):
                os.tcgetpgrp(fd)
                return fd
        except OSError:
            continue
    return None


def terminal_owner(fd: int) -> int | None:
    """The terminal's foreground process group, or None when it cannot be read."""
    try:
        return os.tcgetpgrp(fd)
    except OSError:
        return None


def take_terminal(fd: int, group: int) -> bool:
    """Make ``group`` the terminal's foreground group.

    SIGTTOU (and SIGTTIN) are blocked around the call: from a background group
    tcsetpgrp(3) raises SIGTTOU unless it is blocked or ignored, and envwrap
    catches it (job control) rather than ignoring it.
    """
    previous = _signal.pthread_sigmask(_signal.SIG_BLOCK, TERMINAL_IO)
    try:
        os.tcsetpgrp(fd, group)
    except OSError:
        return False
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, previous)
    return True
