"""Run envwrap with the guardian's fallback forced: no cgroup, follow the descendants.

    with_guardian_fallback.py ENVWRAP-ARGS...

The guardian notes envwrap's descendants every 50 ms instead of every second.
"""

from __future__ import annotations

import sys

from envwrap import cli
from envwrap.process import guardian


def _no_cgroup() -> None:
    return None


guardian.own_cgroup = _no_cgroup  # type: ignore[assignment]
guardian.WATCH_EVERY = 0.05

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
