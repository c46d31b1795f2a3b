"""Exec mode, and what it shares with the supervisor's children.

Exec mode replaces envwrap with the command (``execvpe``): the command keeps
envwrap's PID and envwrap leaves no process behind. Before that, the signal
dispositions the Python runtime changed for itself are put back, and no
descriptor beyond 0, 1 and 2 survives the exec -- but the ``--listen`` sockets,
which go to 3, 4, ... (:func:`place_passed`, which the supervisor's forked
children run too).
"""

from __future__ import annotations

import _signal
import errno
import os

from envwrap.errors import EX_CANNOT_EXECUTE, EX_NOT_FOUND, CommandError, InvalidValueError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings anyway
    from collections.abc import Iterable, Mapping, Sequence
    from typing import NoReturn

__all__ = [
    "check_exec_limits",
    "exec_command",
    "inherited_descriptors",
    "place_passed",
    "restore_signal_defaults",
]

#: Linux MAX_ARG_STRLEN: one "NAME=value" string, NUL included (32 pages)
MAX_STRING_BYTES = 128 * 1024
_POINTER_BYTES = 8


def check_exec_limits(environment: Mapping[str, str], argv: list[str]) -> None:
    """Refuse, naming the variable, what ``execve`` would refuse.

    Raises :class:`InvalidValueError` (65) for a NUL byte, a string over
    128 KiB, or an environment plus arguments over the system's ARG_MAX.
    """
    total = 0
    for name, value in environment.items():
        if "\x00" in value or "\x00" in name:
            raise InvalidValueError("the value contains a NUL byte", variable=name)
        size = len(os.fsencode(name)) + len(os.fsencode(value)) + 2
        if size > MAX_STRING_BYTES:
            raise InvalidValueError(
                f"the value is {size} bytes; a program's environment takes at most "
                f"{MAX_STRING_BYTES} bytes per variable",
                variable=name,
                hint="render it to a file with --render instead",
            )
        total += size + _POINTER_BYTES
    total += sum(len(os.fsencode(arg)) + 1 + _POINTER_BYTES for arg in argv)
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        limit = 2 * 1024 * 1024
    if limit > 0 and total > limit:
        largest = max(environment, key=lambda n: len(environment[n]), default=None)
        raise InvalidValueError(
            f"the environment and arguments take {total} bytes, over the system's "
            f"limit of {limit}",
            variable=largest,
            hint="the variable named is the largest; render large secrets to files",
        )


#: the dispositions CPython sets for itself at start-up (SIG_IGN): a write then
#: fails with EPIPE or EFBIG instead of killing the process
PYTHON_IGNORES = frozenset(
    getattr(_signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(_signal, name)
)


def restore_signal_defaults() -> None:
    """Undo what the Python runtime did to signal dispositions for itself.

    Ignored dispositions survive ``exec``, so without this
    ``sh -c 'yes | head -1'`` would never end.
    """
    for number in PYTHON_IGNORES:
        _signal.signal(number, _signal.SIG_DFL)


def inherited_descriptors() -> list[int]:
    """Open descriptors above 2 (Linux /proc, macOS /dev/fd)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        return sorted(int(n) for n in names if n.isdigit() and int(n) > 2)
    return []


def _close_on_exec(fds: Iterable[int]) -> None:
    for fd in fds:
        try:  # noqa: SIM105 -- contextlib would cost start-up time
            os.set_inheritable(fd, False)
        except OSError:
            pass  # the listing's own descriptor, closed already


def place_passed(passed: Sequence[int], above: int, carry: int = -1) -> int:
    """Put the ``passed`` descriptors on 3, 4, ..., in order (sd_listen_fds(3)).

    Their numbers may overlap those targets, so each first moves above every
    number in use (``above``, and ``carry``), close-on-exec, then down to its
    target, inheritable. ``carry`` (a descriptor to keep, close-on-exec) moves
    along with them; returns its new number. Runs in exec mode and in the
    forked child of :func:`envwrap.process.posix.spawn`, so it makes plain
    system calls only.
    """
    count = len(passed)
    base = max(above, carry, 2 + count, *passed) + 1
    for index, fd in enumerate(passed):
        os.dup2(fd, base + index, inheritable=False)
    if carry >= 0:
        carry = os.dup2(carry, base + count, inheritable=False)
    for index in range(count):
        os.dup2(base + index, 3 + index)  # the CLOEXEC copy above closes at exec
    return carry


def exec_command(
    argv: list[str], environment: dict[str, str], passed: Sequence[int] = ()
) -> NoReturn:
    """Replace this process with ``argv``; returns only by raising :class:`CommandError`.

    ``passed`` (``--listen`` sockets) land on descriptors 3, 4, ... with
    ``LISTEN_PID`` set to this process's PID, which exec keeps (sd_listen_fds(3)).
    """
    open_fds = inherited_descriptors()
    if passed:
        place_passed(passed, max(open_fds, default=2))
        environment = {**environment, "LISTEN_PID": str(os.getpid())}
    _close_on_exec(fd for fd in open_fds if fd >= 3 + len(passed))
    restore_signal_defaults()
    try:
        os.execvpe(argv[0], argv, environment)
    except OSError as exc:
        raise command_error(argv[0], exc) from None


def command_error(program: str, exc: OSError) -> CommandError:
    """126/127 as a shell gives them for a command that cannot run."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return CommandError(f"{program}: command not found", exit_code=EX_NOT_FOUND)
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return CommandError(f"{program}: cannot execute: {reason}", exit_code=EX_CANNOT_EXECUTE)
