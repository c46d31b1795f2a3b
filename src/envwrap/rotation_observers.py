"""What the rotation policy tells about what runs, off every other loop (docs/rotation.md).

An :class:`Observer` (the fallback cache, the lease revoker, :class:`RunningReport`
behind ``/metrics``) is handed to the policy at construction and told, on one
worker thread (:class:`Observers`), when a new generation runs and what the
stores hold after each round -- never inside the supervisor's loop, which must
stay quick.
"""

from __future__ import annotations

import threading
from typing import Protocol

from envwrap import log
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from envwrap.backends import Fetched
    from envwrap.environment import Composed, SecretEnvironment
    from envwrap.errors import EnvwrapError
    from envwrap.refs import Locator

__all__ = ["Observer", "Observers", "RunningReport"]


class Observer(Protocol):
    """Told, on the policy's observer thread, what runs: the fallback cache, the
    lease revoker. Never inside the supervisor's loop, which must stay quick.

    ``follows_rounds``: whether it wants :meth:`round_done`. Telling a round wakes
    the observer thread once per poll, which a resident process pays for every
    second with ``--interval 1s``; it happens only when an observer wants it.
    """

    follows_rounds: bool

    def generation_changed(self, running: Composed, stopped: Composed) -> None:
        """A new generation runs on ``running``; the one that ran on ``stopped`` stopped."""

    def round_done(self, running: Composed, secrets: SecretEnvironment,
                   live: Mapping[Locator, Fetched]) -> None:
        """A watcher round where every store answered: ``live`` is what they hold."""

    def access_refused(self, locator: Locator, error: EnvwrapError) -> None:
        """A store answered that ``locator`` cannot be read (denied, not found)."""


class RunningReport:
    """The observer that publishes what runs (``/metrics``' ``envwrap_secret_info``)."""

    follows_rounds = False

    def generation_changed(self, running: Composed, stopped: Composed) -> None:
        audit.record_running(running.uses, running.fetched)

    def round_done(self, running: Composed, secrets: SecretEnvironment,
                   live: Mapping[Locator, Fetched]) -> None:
        """Nothing: what runs changes with generations, not with polls."""

    def access_refused(self, locator: Locator, error: EnvwrapError) -> None:
        """Nothing: what runs is unchanged."""


class Observers:
    """One worker thread and its queue: observers run in order, off every other loop."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        import queue

        self.observers = tuple(observers)
        #: whether any observer wants each poll round (see :class:`Observer`)
        self.follow_rounds = any(observer.follows_rounds for observer in self.observers)
        self._queue: queue.SimpleQueue[Callable[[Observer], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def tell(self, call: Callable[[Observer], None]) -> None:
        if not self.observers:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="envwrap-observers",
                                            daemon=True)
            self._thread.start()
        self._queue.put(call)

    def _run(self) -> None:
        while (call := self._queue.get()) is not None:
            for observer in self.observers:
                try:
                    call(observer)
                except Exception as exc:  # one observer's bug must not stop the others
                    log.error(f"{type(observer).__name__} failed ({type(exc).__name__})")

    def close(self, timeout: float = 10.0) -> None:
        """Let what is queued finish (envwrap is stopping)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

