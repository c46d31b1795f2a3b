"""Process-level protection of the secrets envwrap holds."""

from __future__ import annotations

import sys

__all__ = ["make_undumpable"]

PR_SET_DUMPABLE = 4


def make_undumpable() -> bool:
    """Linux: forbid core dumps and ptrace of envwrap by other processes of the user.

    With ``PR_SET_DUMPABLE`` 0 the kernel refuses ``ptrace`` attach and
    ``/proc/PID/mem`` to unprivileged processes and writes no core dump
    (prctl(2)). ``execve`` resets the flag, so the program envwrap starts is not
    affected. Returns whether the flag was set.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
