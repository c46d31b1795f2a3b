"""``envwrap sidecar``: keep ``--render`` files fresh and signal another process.

No child of its own. The target is found by ``--target-pid-file`` or by
``--target-name`` (psutil), e.g. across a shared process namespace in a
Kubernetes pod (``shareProcessNamespace: true``); it is looked up again at every
change, so a restarted target is found under its new PID. Without a target
the sidecar only renders (the program re-reads the file itself).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from envwrap import log
from envwrap.quiet import QuietTimer
from envwrap.render import render_files
from envwrap.telemetry import audit
from envwrap.watch import build_watcher

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envwrap.config import Settings
    from envwrap.environment import Composed
    from envwrap.refs import Locator

__all__ = ["TargetFinder", "run_sidecar"]

#: how long a change waits for a missing target to (re)appear before giving up on it
TARGET_WAIT = 30.0


class TargetFinder:
    """Finds the process to signal, by pid file or by name."""

    def __init__(self, pid_file: str | None, name: str | None) -> None:
        self.pid_file = pid_file
        self.name = name

    @property
    def configured(self) -> bool:
        return bool(self.pid_file or self.name)

    def describe(self) -> str:
        return f"pid file {self.pid_file}" if self.pid_file else f"process name {self.name}"

    def find(self) -> list[int]:
        if self.pid_file:
            return self._from_pid_file()
        if self.name:
            return self._by_name()
        return []

    def _from_pid_file(self) -> list[int]:
        assert self.pid_file
        try:
            with open(self.pid_file, encoding="ascii") as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return []
        return [pid] if pid > 0 and _alive(pid) else []

    def _by_name(self) -> list[int]:
        import psutil

        me = os.getpid()
        matches: dict[int, int] = {}
        for proc in psutil.process_iter(["pid", "ppid", "name", "cmdline"]):
            info = proc.info
            if info["pid"] == me:
                continue
            argv0 = os.path.basename((info.get("cmdline") or [""])[0] or "")
            if self.name in (info.get("name"), argv0):
                matches[info["pid"]] = info["ppid"]
        # signal the top of each matching tree: nginx's master, not its workers
        return sorted(pid for pid, parent in matches.items() if parent not in matches)

    def wait(self, timeout: float, stopping: threading.Event) -> list[int]:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            pids = self.find()
            if pids or time.monotonic() >= deadline:
                return pids
            if stopping.wait(delay):
                return []
            delay = min(delay * 2, 1.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SidecarHandler:
    """The watcher's ``on_change`` for the sidecar: render, then signal the target."""

    def __init__(self, settings: Settings, target: TargetFinder, stopping: threading.Event) -> None:
        self.settings = settings
        self.target = target
        self.stopping = stopping

    def __call__(self, composed: Composed, changed: set[Locator]) -> None:
        render_files(self.settings, composed)
        audit.record_running(composed.uses, composed.fetched)  # what the target now reads
        audit.record("rotation", outcome="applied",
                     detail=", ".join(sorted(str(loc) for loc in changed)))
        if not self.target.configured:
            return
        pids = self.target.wait(TARGET_WAIT, self.stopping)
        if not pids:
            log.warning(
                "no target process to signal; it will read the new files when it starts",
                target=self.target.describe(),
            )
            return
        for pid in pids:
            try:
                os.kill(pid, self.settings.reload_signal)
            except ProcessLookupError:
                continue
            except PermissionError:
                log.error("not allowed to signal the target process", pid=pid)
                audit.record(
                    "signal", pid=pid, signal=self.settings.reload_signal, outcome="denied"
                )
                continue
            log.info("signalled the target", pid=pid, signal=self.settings.reload_signal)
            audit.record("signal", pid=pid, signal=self.settings.reload_signal, outcome="ok")


def run_sidecar(settings: Settings, environ: dict[str, str]) -> int:
    from envwrap.modes.resolution import resolve

    resolved = resolve(settings, environ)
    render_files(settings, resolved.composed)
    audit.record_running(resolved.composed.uses, resolved.composed.fetched)
    # paths are absolute by now: do not keep the start folder busy (docs/containers.md)
    os.chdir("/")
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("stopping", signal=signum)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    target = TargetFinder(settings.target_pid_file, settings.target_name)
    # --wait: a burst of changes is rendered once, with its last state
    quiet = QuietTimer(settings.wait, SidecarHandler(settings, target, stopping))
    watcher = build_watcher(settings, resolved, quiet.offer)
    watcher.start()
    if settings.metrics:
        from envwrap.telemetry.metrics import watch_health

        watch_health("watcher", lambda: watcher.alive)
    log.info(
        "sidecar running",
        files=", ".join(settings.render),
        target=target.describe() if target.configured else None,
    )
    stopping.wait()
    watcher.stop()
    quiet.cancel()
    return 0
