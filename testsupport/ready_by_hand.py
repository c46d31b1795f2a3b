"""A readiness check a test answers by hand, for supervisor drivers with a fake clock."""

from __future__ import annotations

import time
from collections.abc import Callable

from envwrap.process.ready import ReadyCheck


class ReadyByHand(ReadyCheck):
    """Keeps each generation's ``report``; the test calls :meth:`ready` to say that a
    generation is ready, or never does."""

    def __init__(self) -> None:
        self.reports: dict[int, Callable[[int], None]] = {}

    def watch(self, pid: int, report: Callable[[int], None]) -> Callable[[], None]:
        self.reports[pid] = report
        return lambda: None

    def watched(self, pid: int, timeout: float = 20.0) -> int:
        """Wait until the supervisor watches ``pid``, and return it.

        A child may print its first line before the supervisor has put it on
        probation (it starts, then watches); its readiness deadline is set only then,
        so a test moves a fake clock, or reports, after this.
        """
        deadline = time.monotonic() + timeout
        while pid not in self.reports:
            assert time.monotonic() < deadline, f"{pid} never watched"
            time.sleep(0.01)
        return pid

    def ready(self, pid: int) -> None:
        """Report ``pid`` ready, once it is watched."""
        self.reports[self.watched(pid)](pid)
