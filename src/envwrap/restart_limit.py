"""``--restart-limit N/DURATION`` (DESIGN §12): at most N rotation restarts in any window.

:class:`RestartWindow` is the pure rule (a sliding window over the times of
past restarts, with an injectable clock). :class:`LimitedRestarts` applies it
to restart requests: a request the window allows goes to the supervisor at
once; one it does not is *held* -- later requests replace the held one (the
last environment wins, as the supervisor's own ``replace`` merges them) -- and
a timer applies it the moment the window allows. Nothing is ever dropped,
except a held change made moot because the environment went back to the one
the program runs with.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from envwrap import log
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LimitedRestarts", "RestartWindow"]


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


class LimitedRestarts:
    """Restart requests through a :class:`RestartWindow`; thread-safe.

    ``restart(environment, token)`` performs a restart (the supervisor's
    ``replace`` plus bookkeeping); ``token`` travels with the environment it
    belongs to, so that a coalesced change carries the latest one.
    """

    def __init__(
        self,
        window: RestartWindow,
        restart: Callable[[dict[str, str], object], None],
        running: dict[str, str],
    ) -> None:
        self.window = window
        self._restart = restart
        self._running = running
        self._lock = threading.Lock()
        self._held: tuple[dict[str, str], object] | None = None
        self._timer: threading.Timer | None = None
        self._closed = False

    @property
    def held(self) -> bool:
        return self._held is not None

    def request(self, environment: dict[str, str], token: object = None) -> None:
        with self._lock:
            if self._closed:
                return
            if self._held is not None:
                self._held = (environment, token)  # coalesced: the last one wins
                if environment == self._running:
                    self._cancel_hold("the change was undone while held")
                return
            delay = self.window.delay()
            if delay <= 0:
                self._go(environment, token)
                return
            self._held = (environment, token)
            self._arm(delay)
        until = time.strftime("%H:%M:%SZ", time.gmtime(time.time() + delay))
        detail = (f"{self.window.limit} restarts in {self.window.window:g}s reached; "
                  f"the change waits until {until}")
        log.warning(f"restart held by --restart-limit: {detail}")
        audit.record("hold", outcome="held", detail=detail)

    def close(self) -> None:
        """Stop the timer; a held change is not applied (envwrap is exiting)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()

    def _arm(self, delay: float) -> None:
        timer = threading.Timer(delay, self._release)
        timer.daemon = True
        timer.name = "envwrap-restart-limit"
        self._timer = timer
        timer.start()

    def _release(self) -> None:
        with self._lock:
            self._timer = None
            if self._held is None or self._closed:
                return
            delay = self.window.delay()
            if delay > 0:  # a timer that fired a little early
                self._arm(delay)
                return
            environment, token = self._held
            self._held = None
            self._go(environment, token)
        log.info("applying the held change (--restart-limit)")
        audit.record("hold", outcome="released")

    def _cancel_hold(self, why: str) -> None:
        self._held = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info(f"held restart cancelled: {why}")
        audit.record("hold", outcome="released", detail=why)

    def _go(self, environment: dict[str, str], token: object) -> None:
        self.window.record()
        self._running = environment
        self._restart(environment, token)
