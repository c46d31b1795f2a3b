"""``prctl(2)`` without :mod:`ctypes`, and the three process settings envwrap makes with it.

Start-up cost matters (``envwrap --init`` should start within 1.5x of exec
mode): the function comes from ``_ctypes``, the C half of :mod:`ctypes`, whose
Python half costs 5 ms of start-up, about a third of envwrap's whole budget,
for two type classes.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only; `typing` costs start-up time
    from collections.abc import Callable

__all__ = ["PR_SET_PDEATHSIG", "become_reaper", "load_prctl", "make_undumpable"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

_prctl_cache: list[Callable[..., int] | None] = []


def load_prctl() -> Callable[..., int] | None:
    """``prctl(2)`` from the C library, or ``None`` where there is none (macOS).

    Built on ``_ctypes``; falls back to :mod:`ctypes` if the private layout
    ever changes. The function is resolved once: a forked child calls it
    through this pointer without loading anything.
    """
    if _prctl_cache:
        return _prctl_cache[0]
    function: Callable[..., int] | None = None
    try:
        function = _lean_prctl()
    except Exception:  # the private _ctypes layout moved; pay for the public module
        try:
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).prctl
            function.argtypes = (ctypes.c_int, *(ctypes.c_ulong,) * 4)
            function.restype = ctypes.c_int
        except (OSError, AttributeError):
            function = None
    _prctl_cache.append(function)
    return function


def _lean_prctl() -> Callable[..., int] | None:
    import _ctypes

    if TYPE_CHECKING:
        _Scalar = _ctypes._SimpleCData[int]
    else:  # not subscriptable at run time
        _Scalar = _ctypes._SimpleCData

    class _Int(_Scalar):
        _type_ = "i"

    class _ULong(_Scalar):
        _type_ = "L"

    class _Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = _Int
        # prctl is variadic; every argument after the option is an unsigned long
        # (prctl(2)), and a C int would leave the register's upper half undefined
        _argtypes_ = (_Int, _ULong, _ULong, _ULong, _ULong)

    class _Library:
        def __init__(self) -> None:
            # dlopen(NULL): the symbols of the process itself (dlopen(3))
            self._handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]

    try:
        function = _Function(("prctl", _Library()))  # type: ignore[arg-type]
    except AttributeError:  # no such symbol: not Linux
        return None
    return function  # type: ignore[no-any-return]


def _prctl(option: int, value: int) -> int:
    """Call ``prctl(option, value, 0, 0, 0)``; raise OSError on failure."""
    function = load_prctl()
    if function is None:
        raise OSError(errno.ENOSYS, "prctl is not available on this system")
    if function(option, value, 0, 0, 0) != 0:
        import _ctypes

        number = _ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return 0


def become_reaper() -> bool:
    """Make this process adopt its orphaned descendants; False where it cannot.

    PID 1 adopts them anyway; elsewhere it becomes a child subreaper (Linux
    3.4+, prctl(2)). Without that an orphan of the child is re-parented to PID
    1 (or the nearest other subreaper), out of envwrap's reach: envwrap could
    neither reap it nor wait for it before starting the next generation.
    """
    if os.getpid() == 1:
        return True  # the kernel re-parents orphans to PID 1
    try:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        from envwrap import log

        log.debug("cannot become a child subreaper; orphans go to PID 1")
        return False
    return True


def make_undumpable() -> bool:
    """Linux: no core dump, no ``ptrace``, no ``/proc/PID/mem`` or ``environ`` for
    the user's other processes; False where it cannot be set.

    With ``PR_SET_DUMPABLE`` 0 the kernel refuses ``ptrace`` attach and the
    ``/proc/PID`` files that expose memory to unprivileged processes, and owns
    them by root (prctl(2), proc(5)). The flag is kept across ``fork`` -- so a
    helper forked afterwards is non-dumpable from its first instruction -- and
    reset by ``execve``, so the program envwrap starts is not affected.
    """
    try:
        _prctl(PR_SET_DUMPABLE, 0)
    except OSError:
        return False
    return True
