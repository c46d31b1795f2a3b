"""``--wait MIN[:MAX]``: act on a burst of changes once, with its last state (docs/rotation.md).

consul-template's quiescence. :class:`Quiescence` is the rule, pure bookkeeping
on the times it is given; :class:`QuietTimer` is the timer the rotation policy
(and the sidecar) owns: every change the watcher reports starts MIN again, and
when it runs out -- or MAX after the first change -- the last reported state is
handed on once. A burst of writes, or a slow writer caught between its truncate
and its last write, is one change with the final content; a change the store
takes back within the wait hands on what the store holds again.
"""

from __future__ import annotations

import threading
import time

from envwrap import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from envwrap.environment import Composed
    from envwrap.refs import Locator

    #: starts a timer: (delay, what to call) -> a function that cancels it
    StartTimer = Callable[[float, Callable[[], None]], Callable[[], None]]

__all__ = ["Quiescence", "QuietTimer"]


class Quiescence:
    """When to act on changes: ``minimum`` after the last one, ``maximum`` after the first.

    ``(0, 0)`` acts at once.
    """

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self.first: float | None = None
        self.last: float | None = None

    @property
    def pending(self) -> bool:
        return self.first is not None

    def observe(self, now: float) -> None:
        """A change was seen at ``now``."""
        if self.first is None:
            self.first = now
        self.last = now

    def deadline(self) -> float | None:
        """When the pending changes are due; None when there are none."""
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.minimum, self.first + self.maximum)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def overdue(self, now: float) -> bool:
        """MAX has passed since the first change: act on what there is."""
        return self.first is not None and now >= self.first + self.maximum

    def reset(self) -> None:
        self.first = self.last = None


def thread_timer(delay: float, call: Callable[[], None]) -> Callable[[], None]:
    timer = threading.Timer(delay, call)
    timer.daemon = True
    timer.name = "envwrap-wait"
    timer.start()
    return timer.cancel


class QuietTimer:
    """Hands ``act`` the last reported environment once things are quiet; thread-safe.

    ``act`` gets the composed environment last offered and every locator that
    changed since the last hand-over. With ``--wait 0`` it is called at once, on
    the caller's thread; otherwise on the timer's.
    """

    def __init__(
        self,
        wait: tuple[float, float],
        act: Callable[[Composed, set[Locator]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        start_timer: StartTimer = thread_timer,
    ) -> None:
        self.quiet = Quiescence(*wait)
        self.act = act
        self.clock = clock
        self.start_timer = start_timer
        self._lock = threading.Lock()
        self._latest: Composed | None = None
        self._changed: set[Locator] = set()
        self._cancel: Callable[[], None] | None = None

    @property
    def pending(self) -> bool:
        """Whether a change waits for quiet."""
        return self._latest is not None

    def offer(self, composed: Composed, changed: set[Locator]) -> None:
        """The watcher saw a change: ``composed`` is what the stores hold now."""
        if self.quiet.maximum <= 0:
            self.act(composed, changed)
            return
        with self._lock:
            self._latest = composed
            self._changed |= changed
            self.quiet.observe(self.clock())
            self._arm()

    def fire(self) -> None:
        """The timer ran out: hand on the last state if it is due (else wait on)."""
        with self._lock:
            self._cancel = None
            if self._latest is None:
                return
            if not self.quiet.due(self.clock()):
                self._arm()
                return
            composed, changed = self._latest, self._changed
            self._latest, self._changed = None, set()
            self.quiet.reset()
        try:
            self.act(composed, changed)
        except Exception as exc:  # a bug in one change must not end the timer thread loudly
            log.error(f"applying a change failed ({type(exc).__name__}); keeping current values")

    def cancel(self) -> None:
        """Drop what waits (envwrap is stopping)."""
        with self._lock:
            cancel, self._cancel = self._cancel, None
            self._latest, self._changed = None, set()
            self.quiet.reset()
        if cancel is not None:
            cancel()

    def _arm(self) -> None:
        """(Re)start the timer for the current deadline (locked)."""
        deadline = self.quiet.deadline()
        if deadline is None:
            return
        if self._cancel is not None:
            self._cancel()
        self._cancel = self.start_timer(max(0.0, deadline - self.clock()), self.fire)
