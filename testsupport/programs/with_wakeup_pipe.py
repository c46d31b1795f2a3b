"""Run envwrap with the supervisor's wakeup-pipe fallback (macOS) forced on Linux.

    with_wakeup_pipe.py ENVWRAP-ARGS...

The seam is ``signals.signal_source``; the first line on stdout,
``signals: wakeup pipe``, proves that the fallback was really built.
"""

from __future__ import annotations

import os
import sys

from envwrap import cli
from envwrap.process import signals


class _Forced(signals.WakeupPipe):
    def __init__(self, signals: frozenset[int], faults: frozenset[int] = frozenset(),
                 own: frozenset[int] = frozenset()) -> None:
        super().__init__(signals, faults, own)
        os.write(1, b"signals: wakeup pipe\n")


signals.signal_source = _Forced  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
