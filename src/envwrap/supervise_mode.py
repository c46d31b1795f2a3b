"""Supervise mode (``--init``, ``--watch``, ``--mask``): the glue around the supervisor.

The :class:`~envwrap.supervisor.Supervisor` knows processes, never secrets.
Two seams plug into it here:

- ``--watch``: :func:`envwrap.rotation.start_watching` gets the supervisor as
  its ``ChildControl`` and calls its thread-safe ``replace`` / ``send`` /
  ``request_exit`` from the watcher's threads.
- ``--mask``: the program's stdout and stderr are pipes that
  :class:`envwrap.mask.MaskedOutput` relays; the supervisor puts their write
  ends on fds 1 and 2 of every generation.
"""

from __future__ import annotations

import gc

from envwrap import audit
from envwrap.supervisor import Supervisor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envwrap.child import Child
    from envwrap.config import Settings
    from envwrap.mask import MaskedOutput
    from envwrap.revoke import LeaseRevoker
    from envwrap.rotation import RotationHandler
    from envwrap.runner import Resolved
    from envwrap.watch import Watcher

__all__ = ["ObservedSupervisor", "run_supervised"]


class ObservedSupervisor(Supervisor):
    """The supervisor, emitting ``start``, ``ready`` and ``child_exit`` events.

    Kept out of supervisor.py, which is being reworked for generations and
    ``--ready`` (issue 11); once that emits these events itself, this class goes.
    Without ``--ready`` a generation counts as ready once started (DESIGN §10).
    """

    _generations = 0

    def _spawn(self, environment: dict[str, str]) -> None:
        super()._spawn(environment)
        child = self._child
        if child is None:
            return
        reason = "initial" if self._generations == 0 else "rotation"
        self._generations += 1
        audit.record("start", pid=child.pid, reason=reason)
        audit.record("ready", pid=child.pid)

    def _on_child_exited(self, child: Child) -> None:
        audit.record("child_exit", pid=child.pid, code=child.exit_code)
        super()._on_child_exited(child)


def run_supervised(settings: Settings, resolved: Resolved, child_env: dict[str, str]) -> int:
    """Run ``settings.argv`` as envwrap's child and return envwrap's exit code.

    Raises :class:`~envwrap.errors.CommandError` (126/127) if the program
    cannot be started.
    """
    # Everything loaded so far lives as long as envwrap: take it out of the
    # garbage collector's sight (gc.freeze), so that a long supervision never
    # walks it again, forked children do not copy the pages a collection
    # would touch, and the collection at exit is shorter (~2 ms).
    gc.freeze()
    # Then, before any thread exists: the supervisor blocks the signals it
    # takes, and only threads started afterwards (mask relays, the watcher)
    # inherit that block.
    supervisor = ObservedSupervisor(
        settings.argv,
        child_env,
        kill_signal=settings.kill_signal,
        kill_timeout=settings.kill_timeout,
    )
    masked: MaskedOutput | None = None
    if settings.mask:
        from envwrap.mask import MaskedOutput

        masked = MaskedOutput(resolved.composed.secret_values)
        supervisor.stdio = (None, masked.child_stdout_fd, masked.child_stderr_fd)
    revoker: LeaseRevoker | None = None
    if settings.revoke_on_exit and resolved.registry is not None:
        from envwrap.revoke import LeaseRevoker

        revoker = LeaseRevoker(resolved.registry, resolved.fetched)
    watcher: Watcher | None = None
    handler: RotationHandler | None = None
    try:
        if settings.watch:
            from envwrap.rotation import start_watching

            watching = start_watching(
                settings, resolved, child_env, supervisor,
                on_values=masked.update if masked is not None else None,
                revoker=revoker,
            )
            if watching is not None:
                watcher, handler = watching
        elif resolved.registry is not None and revoker is None:
            resolved.registry.close()  # nothing will read the stores again
        if settings.metrics:
            import threading

            from envwrap.metrics import watch_health

            watch_health("supervisor", threading.main_thread().is_alive)
            if watcher is not None:
                watch_health("watcher", lambda: watcher is not None and watcher.alive)
        return supervisor.run()
    finally:
        if handler is not None and handler.limiter is not None:
            handler.limiter.close()
        if watcher is not None:
            watcher.stop()
        if revoker is not None:
            revoker.close(watcher.fetched if watcher is not None else None)
        if masked is not None:
            masked.close_child_ends()
            masked.join(timeout=5)
