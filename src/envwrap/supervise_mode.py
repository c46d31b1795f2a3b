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
import os

from envwrap.supervisor import Supervisor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envwrap.config import Settings
    from envwrap.guardian import Guardian
    from envwrap.mask import MaskedOutput
    from envwrap.runner import Resolved
    from envwrap.watch import Watcher

__all__ = ["leave_start_folder", "run_supervised"]


def leave_start_folder() -> None:
    """``chdir("/")``, so that envwrap does not keep its start folder busy (DESIGN §12).

    An unmountable volume, a release folder that cannot be deleted: envwrap
    lives as long as the program, and its own working folder would pin the
    folder it was started in. Every path option is absolute by now
    (:func:`envwrap.config.make_paths_absolute`); the program still starts in
    the start folder (the supervisor's ``cwd``).
    """
    os.chdir("/")


def run_supervised(
    settings: Settings,
    resolved: Resolved,
    child_env: dict[str, str],
    keeper: Guardian | None = None,
) -> int:
    """Run ``settings.argv`` as envwrap's child and return envwrap's exit code.

    ``keeper`` (:func:`envwrap.guardian.start`, started by the caller before
    any secret was read) is told at the end that this is a normal exit.

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
    supervisor = Supervisor(
        settings.argv,
        child_env,
        kill_signal=settings.kill_signal,
        kill_timeout=settings.kill_timeout,
        cwd=settings.start_folder or None,
    )
    leave_start_folder()
    masked: MaskedOutput | None = None
    if settings.mask:
        from envwrap.mask import MaskedOutput

        masked = MaskedOutput(resolved.composed.secret_values)
        supervisor.stdio = (None, masked.child_stdout_fd, masked.child_stderr_fd)
    watcher: Watcher | None = None
    try:
        if settings.watch:
            from envwrap.rotation import start_watching

            watcher = start_watching(
                settings, resolved, child_env, supervisor,
                on_values=masked.update if masked is not None else None,
            )
        elif resolved.registry is not None:
            resolved.registry.close()  # nothing will read the stores again
        return supervisor.run()
    finally:
        if keeper is not None:
            keeper.release()
        if watcher is not None:
            watcher.stop()
        if masked is not None:
            masked.close_child_ends()
            masked.join(timeout=5)
