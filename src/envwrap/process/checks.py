"""What every ``--ready`` check is: the interface the supervisor drives.

The checks themselves are in :mod:`~envwrap.process.ready` (``notify``, probes,
durations) and :mod:`~envwrap.process.ready_log` (``log:REGEX``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Report = Callable[[int], None]
    Stdio = tuple[int | None, int | None, int | None]

__all__ = ["OutputTap", "ReadyCheck"]


class OutputTap:
    """A check's hold on one generation's output: what it gets on 0, 1, 2."""

    stdio: Stdio

    def started(self, pid: int) -> None:
        """The generation ``pid`` was spawned with :attr:`stdio`."""

    def abandon(self) -> None:
        """It could not be spawned."""


class ReadyCheck:
    """A readiness check; :meth:`watch` one generation at a time or several."""

    def tap(self, stdio: Stdio) -> OutputTap | None:
        """For a check that reads the program's output (``log:``): the tap the next
        generation is spawned through, ``stdio`` being where its output goes."""
        return None

    def environment(self) -> dict[str, str]:
        """Variables every generation needs for this check (``NOTIFY_SOCKET``)."""
        return {}

    def open(self) -> None:
        """Acquire what the check needs (a socket); call before the first generation."""

    def close(self) -> None:
        """Release it; pending watches are cancelled."""

    def watch(self, pid: int, report: Report) -> Callable[[], None]:
        """Start watching generation ``pid``; ``report(pid)`` once it is ready.

        Returns a function that cancels the watch (idempotent).
        """
        raise NotImplementedError
