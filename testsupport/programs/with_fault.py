"""Run envwrap with a real fault planted in its supervisor's loop.

    with_fault.py segv|abort ENVWRAP-ARGS...

When the loop takes SIGUSR2 (which it would forward), envwrap itself faults
instead: a NULL read (SIGSEGV) or ``abort()`` (SIGABRT). The test checks that
envwrap then dies of that signal, although it blocks the faults to forward the
ones other processes send.
"""

from __future__ import annotations

import os
import signal
import sys

from envwrap import cli
from envwrap.process.supervisor import Supervisor

_KIND = sys.argv.pop(1)
_on_signal = Supervisor._on_signal


def _faulting(self: Supervisor, signum: int) -> None:
    if signum == signal.SIGUSR2:
        if _KIND == "segv":
            import ctypes

            ctypes.string_at(0)  # a real SIGSEGV, raised by the kernel for this thread
        os.abort()
    _on_signal(self, signum)


Supervisor._on_signal = _faulting  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
