"""Supervise mode (``--init``, ``--watch``, ``--mask``): the glue around the supervisor.

The :class:`~envwrap.process.supervisor.Supervisor` knows processes, never secrets.
These seams plug into it here:

- ``--watch``: :func:`start_watching` builds the rotation policy (the one owner
  of what runs) with the supervisor as its ``ChildControl``, the
  ``--restart-limit`` gate and the observers (cache, lease revoker), and the
  watcher that reports changes to it.
- ``--mask``: the program's stdout and stderr are pipes that
  :class:`envwrap.mask.MaskedOutput` relays; the supervisor puts their write
  ends on fds 1 and 2 of every generation.
- ``--listen``: the sockets (bound by the runner) go to every generation on
  fds 3, 4, ... with ``LISTEN_FDS`` / ``LISTEN_FDNAMES`` (``LISTEN_PID`` is
  written by the spawned child itself).
- ``--ready``: the check goes to the supervisor, which opens it (its threads
  must inherit the blocked signals) and adds its ``NOTIFY_SOCKET``.
"""

from __future__ import annotations

import gc
import os

from envwrap import log
from envwrap.process.signals import TakenSignals
from envwrap.process.spec import ProcessSpec
from envwrap.process.supervisor import Supervisor
from envwrap.telemetry import audit, events

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from envwrap.config import Settings
    from envwrap.environment import Resolved
    from envwrap.mask import MaskedOutput
    from envwrap.process.guardian import Guardian
    from envwrap.process.listen import Listener
    from envwrap.process.ready import ReadyCheck
    from envwrap.revoke import LeaseRevoker
    from envwrap.rotation import ChildControl, RotationPolicy
    from envwrap.rotation_observers import Observer
    from envwrap.watch import Watcher

__all__ = ["leave_start_folder", "run_supervised", "start_watching"]


def leave_start_folder() -> None:
    """``chdir("/")``, so that envwrap does not keep its start folder busy.

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
    listeners: Sequence[Listener] = (),
    keeper: Guardian | None = None,
) -> int:
    """Run ``settings.argv`` as envwrap's child and return envwrap's exit code.

    ``keeper`` (:func:`envwrap.process.guardian.start`, started by the caller before
    any secret was read) is told at the end that this is a normal exit.

    Raises :class:`~envwrap.errors.CommandError` (126/127) if the program
    cannot be started.
    """
    # Everything loaded so far lives as long as envwrap: take it out of the
    # garbage collector's sight (gc.freeze), so that a long supervision never
    # walks it again, forked children do not copy the pages a collection
    # would touch, and the collection at exit is shorter (~2 ms).
    gc.freeze()
    # Then, before any thread exists, the signals the supervisor waits for are
    # taken: only threads started afterwards (mask relays, the --ready check,
    # the watcher) inherit that block.
    taken = TakenSignals()
    masked: MaskedOutput | None = None
    if settings.mask:
        from envwrap.mask import MaskedOutput

        masked = MaskedOutput(resolved.composed.secret_values)
    ready: ReadyCheck | None = None
    if settings.ready:
        from envwrap.process.ready import parse_check

        ready = parse_check(settings.ready)  # opened (and closed) by the supervisor
        if settings.on_change == "handoff" and settings.watch and not listeners:
            log.warning("--on-change handoff without --listen: at each change the new "
                        "generation starts while the current one still runs, so a program "
                        "that binds its own port fails with 'address already in use' "
                        "(unless it sets SO_REUSEPORT); let envwrap hold the port with "
                        "--listen :PORT and have the program take descriptor 3 "
                        "(docs/rotation.md)")
        if settings.on_change == "handoff" and _probes_a_listener(ready, listeners):
            log.warning("--ready probes a --listen socket, which the old generation may "
                        "answer during a handoff; prefer --ready notify or a duration")
    stdio = (None, masked.child_stdout_fd, masked.child_stderr_fd) if masked else (None, None, None)
    extra: dict[str, str] = {}
    if listeners:
        from envwrap.process.listen import listen_environment

        extra = listen_environment(listeners)
    spec = ProcessSpec(
        settings.argv,
        child_env,
        cwd=settings.start_folder or None,
        kill_signal=settings.kill_signal,
        kill_timeout=settings.kill_timeout,
        passed_fds=[listener.fileno() for listener in listeners],
        extra_environment=extra,
        stdio=stdio,
        ready=ready,
        ready_timeout=settings.ready_timeout,
        on_event=audit.record,
    )
    supervisor = Supervisor(spec, taken)
    leave_start_folder()
    revoker: LeaseRevoker | None = None
    if settings.revoke_on_exit and resolved.registry is not None:
        from envwrap.revoke import LeaseRevoker

        revoker = LeaseRevoker(resolved.registry, resolved.fetched)
        events.add_sink(revoker)  # it follows the generations (start, child_exit)
    watcher: Watcher | None = None
    policy: RotationPolicy | None = None
    # what the first generation runs on (/metrics); the policy reports the later ones
    audit.record_running(resolved.composed.uses, resolved.composed.fetched)
    try:
        if settings.watch:
            watching = start_watching(
                settings, resolved, child_env, supervisor,
                on_values=masked.update if masked is not None else None,
                revoker=revoker,
            )
            if watching is not None:
                watcher, policy = watching
        elif resolved.registry is not None and revoker is None:
            resolved.registry.close()  # nothing will read the stores again
        if settings.metrics:
            import threading

            from envwrap.telemetry.metrics import watch_health

            watch_health("supervisor", threading.main_thread().is_alive)
            if watcher is not None:
                watch_health("watcher", lambda: watcher is not None and watcher.alive)
        # --mask alone stays as silent as exec mode; so does a plain init with no
        # secret at all (envwrap as tini or dumb-init: a PID 1 that says nothing)
        if settings.supervise and (resolved.composed.uses or watcher is not None):
            from envwrap.startup import supervise_line

            log.notice(supervise_line(settings, resolved.composed, watching=watcher is not None))
        return supervisor.run()
    finally:
        if keeper is not None:
            keeper.release()
        if watcher is not None:
            watcher.stop()
        if policy is not None:
            policy.close()  # after the watcher: no change arrives any more
            from envwrap.telemetry.events import remove_sink

            remove_sink(policy.program)
        if revoker is not None:
            events.remove_sink(revoker)
            revoker.close(watcher.fetched if watcher is not None else None)
        if ready is not None:
            ready.close()
        if masked is not None:
            masked.close_child_ends()
            masked.join(timeout=5)


def start_watching(
    settings: Settings,
    resolved: Resolved,
    child_env: dict[str, str],
    child: ChildControl,
    *,
    on_values: Callable[[list[str]], None] | None = None,
    revoker: LeaseRevoker | None = None,
) -> tuple[Watcher, RotationPolicy] | None:
    """Build the policy, its gate and observers, and the watcher that reports to it;
    start the watcher. ``None`` when nothing can change."""
    from envwrap import cache
    from envwrap.rotation import RotationPolicy
    from envwrap.rotation_observers import RunningReport
    from envwrap.telemetry.events import add_sink
    from envwrap.watch import build_watcher

    observers: list[Observer] = [RunningReport()]
    keeper = cache.keeper()
    if keeper is not None:
        observers.append(keeper)
    if revoker is not None:
        observers.append(revoker)
    gate = None
    if settings.restart_limit is not None:
        from envwrap.restart_limit import RestartWindow

        gate = RestartWindow(*settings.restart_limit)
    policy = RotationPolicy(settings, child_env, child, on_values,
                            composed=resolved.composed, gate=gate, observers=observers)
    watcher = build_watcher(
        settings, resolved, policy, on_round=policy.round_done,
        on_refused=policy.access_refused,
        # the stores were down a moment ago: ask again soon, not after a whole --interval
        first_poll=min(1.0, settings.interval) if cache.serving_cached() else None,
    )
    if not resolved.secrets.has_references and not watcher.dotenv_paths:
        log.info("nothing to watch: no references and no .env file")
        return None
    add_sink(policy.program)  # the supervisor's start events: PIDs for its messages
    watcher.start()
    return watcher, policy


def _probes_a_listener(check: ReadyCheck, listeners: Sequence[Listener]) -> bool:
    """Whether an HTTP or TCP check connects to a port envwrap listens on."""
    port = getattr(check, "port", None)
    if port is None:
        return False
    for listener in listeners:
        address = listener.sock.getsockname()
        if isinstance(address, tuple) and address[1] == port:
            return True
    return False
