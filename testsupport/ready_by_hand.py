"""A readiness check a test answers by hand, for supervisor drivers with a fake clock."""

from __future__ import annotations

from collections.abc import Callable

from envwrap.process.ready import ReadyCheck


class ReadyByHand(ReadyCheck):
    """Keeps each generation's ``report``; the test calls ``reports[pid](pid)`` to say
    that a generation is ready, or never does."""

    def __init__(self) -> None:
        self.reports: dict[int, Callable[[int], None]] = {}

    def watch(self, pid: int, report: Callable[[int], None]) -> Callable[[], None]:
        self.reports[pid] = report
        return lambda: None
