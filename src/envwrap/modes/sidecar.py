"""``envwrap sidecar``: keep ``--render`` files fresh and signal another process.

No child of its own. The target is found by ``--target-pid-file`` or by
``--target-name`` (psutil), e.g. across a shared process namespace in a
Kubernetes pod (``shareProcessNamespace: true``); it is looked up again at every
change, so a restarted target is found under its new PID. Without a target
the sidecar only renders (the program re-reads the file itself).

A pid file is trusted only as far as its owner (docs/SECURITY.md, "Sidecar
targets"): it must be a regular file (not a symlink), owned by envwrap's user
or root, writable by nobody else, and the process it names must run as the
file's owner. Otherwise anyone who can write the file could make the sidecar
signal any process it may signal -- root's, when it runs as root.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time

from envwrap import log
from envwrap.errors import ConfigError
from envwrap.quiet import QuietTimer
from envwrap.render import render_files
from envwrap.telemetry import audit
from envwrap.watch import build_watcher

TYPE_CHECKING = False
if TYPE_CHECKING:
    from envwrap.config import Settings
    from envwrap.environment import Composed
    from envwrap.refs import Locator

__all__ = ["RefusedTarget", "TargetFinder", "read_pid_file", "run_sidecar"]

#: how long a change waits for a missing target to (re)appear before giving up on it
TARGET_WAIT = 30.0


class RefusedTarget(Exception):
    """A pid file, or the process it names, that the sidecar must not trust."""


def read_pid_file(path: str) -> int | None:
    """The PID in ``path``, or None when the file is missing, empty or not a PID.

    Raises :class:`RefusedTarget` naming why when the file is a symlink or not
    a regular file, is owned by neither envwrap's user nor root, is writable
    by group or others, or names a process that runs as another user than the
    file's owner.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise RefusedTarget(f"the pid file {path} is a symbolic link") from None
        raise RefusedTarget(f"cannot read the pid file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedTarget(f"the pid file {path} is not a regular file")
        if info.st_uid not in (os.geteuid(), 0):
            raise RefusedTarget(f"the pid file {path} belongs to uid {info.st_uid}, "
                                "neither envwrap's user nor root")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise RefusedTarget(f"the pid file {path} is writable by others "
                                f"(mode {stat.S_IMODE(info.st_mode):04o})")
        text = os.read(fd, 64)
    finally:
        os.close(fd)
    try:
        pid = int(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    if pid <= 0:
        return None
    owner = _owner_of(pid)
    if owner is None:
        return None  # not running (any more)
    if owner != info.st_uid:
        raise RefusedTarget(f"process {pid} named by {path} runs as uid {owner}, "
                            f"not as the pid file's owner (uid {info.st_uid})")
    return pid


def _owner_of(pid: int) -> int | None:
    """The real uid of a running process, or None when there is none."""
    import psutil

    try:
        return int(psutil.Process(pid).uids().real)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


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
        """Raises :class:`RefusedTarget` (see :func:`read_pid_file`)."""
        assert self.pid_file
        pid = read_pid_file(self.pid_file)
        return [] if pid is None else [pid]

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
        try:
            pids = self.target.wait(TARGET_WAIT, self.stopping)
        except RefusedTarget as refused:
            log.error(f"not signalling the target: {refused}")
            audit.record("signal", signal=self.settings.reload_signal, outcome="refused",
                         detail=str(refused))
            return
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

    target = TargetFinder(settings.target_pid_file, settings.target_name)
    if settings.target_pid_file:
        try:  # a pid file that is there already is checked before any store is read
            target.find()
        except RefusedTarget as refused:
            raise ConfigError(f"--target-pid-file: {refused}") from None
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
    # --wait: a burst of changes is rendered once, with its last state
    quiet = QuietTimer(settings.wait, SidecarHandler(settings, target, stopping))
    watcher = build_watcher(settings, resolved, quiet.offer)
    watcher.start()
    if settings.metrics:
        from envwrap.telemetry.metrics import watch_health

        watch_health("watcher", lambda: watcher.alive)
    from envwrap.startup import sidecar_line

    log.notice(sidecar_line(settings, resolved.composed,
                            target.describe() if target.configured else None))
    stopping.wait()
    watcher.stop()
    quiet.cancel()
    return 0
