"""Supervise mode with real processes and real signals (DESIGN §3)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.supervise_support import (
    ECHO,
    HERE,
    Envwrap,
    absent,
    gone,
    kill_quietly,
    run,
    status_fields,
    tree_of,
)
from tests.conftest import envwrap_command

SUPERVISE = {"init": ["--init"], "watch": ["--watch"]}


@pytest.mark.parametrize("mode", SUPERVISE)
def test_every_signal_is_forwarded_once_and_in_order(
    mode: str, workdir: Path, base_env: dict[str, str]
) -> None:
    ew = Envwrap([*SUPERVISE[mode], "--", *ECHO], base_env)
    try:
        ew.ready()
        # ascending numbers: the kernel delivers pending standard signals lowest
        # first, so sending them in that order makes the expected order certain.
        # (SIGCONT is sent on its own: a pending SIGCONT is discarded when a
        # stop signal such as SIGTSTP is generated, and vice versa -- signal(7).)
        burst = [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                 signal.SIGALRM, signal.SIGTSTP, signal.SIGWINCH]
        for signum in burst:
            ew.signal(signum)
        got = [ew.lines.next() for _ in burst]
        assert got == [s.name for s in burst]
        ew.signal(signal.SIGCONT)
        assert ew.lines.next() == "SIGCONT"
        # SIGCHLD is envwrap's own: had it been forwarded, the child would print
        # it before the real-time signal sent after it (and no duplicate of the
        # burst may come in between either)
        ew.signal(signal.SIGCHLD)
        ew.signal(signal.SIGRTMIN + 2)
        assert ew.lines.next() == f"SIG{signal.SIGRTMIN + 2}"
        ew.signal(signal.SIGTERM)
        assert ew.lines.next() == "SIGTERM"
        assert ew.wait() == 128 + signal.SIGTERM
    finally:
        ew.close()
