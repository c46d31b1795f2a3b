"""Run envwrap with the guardian turned off: the negative control of test_guardian.py.

    without_guardian.py ENVWRAP-ARGS...
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from envwrap import cli
from envwrap.process import guardian


def _none(forgotten: Iterable[bytes] = ()) -> None:
    return None


guardian.start = _none  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
