"""``--restart-limit N/DURATION``: at most N rotation restarts in any window.

:class:`RestartWindow` is the gate the rotation policy asks before it starts a
generation (a sliding window over the times of past restarts, with an
injectable clock). It knows nothing of environments: holding a change, and
dropping one the stores took back meanwhile, is the policy's
(:class:`envwrap.rotation.RotationPolicy`).
"""

from __future__ import annotations

import time
from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RestartWindow"]


class RestartWindow:
    """At most ``limit`` restarts in any ``window`` seconds (sliding)."""

    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.clock = clock
        self._times: deque[float] = deque()

    def delay(self) -> float:
        """Seconds until one more restart is allowed (0: now)."""
        now = self.clock()
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.window - now

    def record(self) -> None:
        """Count a restart made now."""
        self._times.append(self.clock())
