"""What envwrap's tests, benchmarks and demo share: fixtures, helpers, helper programs.

Not a test package: nothing here is collected. ``tests/conftest.py`` registers the
fixture modules (``pytest_plugins``); benchmarks and ``scripts/demo.py`` import the
helpers directly (the repository root on ``sys.path``).
"""

from __future__ import annotations

import sys
from pathlib import Path

#: the repository's root folder
ROOT = Path(__file__).resolve().parent.parent
#: the helper programs the tests run as real processes (``PROGRAMS / "signal_echo.py"``)
PROGRAMS = Path(__file__).resolve().parent / "programs"


def envwrap_command() -> list[str]:
    """The installed ``envwrap`` console script, next to this interpreter."""
    script = Path(sys.executable).parent / "envwrap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envwrap"]
