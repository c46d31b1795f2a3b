"""File-system events for the watcher (docs/rotation.md): which folders to watch, which
events matter, and the watchdog observer that turns them into a wake-up.

A secret whose backend names files (``Backend.watch_paths``) and each ``.env`` file
are followed through their folders -- which is what catches the Kubernetes
``..data`` symlink swap. A folder that does not exist yet is watched through its
nearest existing parent, and watched itself once it appears (:meth:`FileEvents.rearm`).
The poll stays the safety net: an event only makes the watcher look sooner.
"""

from __future__ import annotations

import os
import threading

from envwrap import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["FileEvents", "RelevantPaths"]


class RelevantPaths:
    """Whether a file-system event's path can change a watched file.

    Relevant: a watched file itself; a ``..``-prefixed entry beside it (the
    kubelet's ``..data`` swap renames those); and any folder on the way to a
    watched folder that does not exist yet (its creation arms the watch).
    """

    def __init__(self, folders: dict[str, set[str]]) -> None:
        self.files = frozenset(
            os.path.join(folder, name) for folder, names in folders.items() for name in names
        )
        self.folders = frozenset(folders)

    def __call__(self, path: str) -> bool:
        path = os.path.abspath(path)
        if path in self.files:
            return True
        folder, name = os.path.split(path)
        if folder in self.folders and name.startswith(".."):
            return True
        return any(wanted == path or wanted.startswith(path + os.sep) for wanted in self.folders)


def folders_of(paths: Iterable[str]) -> dict[str, set[str]]:
    """Each file's folder, with the names wanted in it."""
    folders: dict[str, set[str]] = {}
    for path in paths:
        folder, name = os.path.split(os.path.abspath(path))
        folders.setdefault(folder, set()).add(name)
    return folders


def watch_targets(folders: Iterable[str]) -> frozenset[str]:
    """The folders to watch: each wanted folder, or its nearest existing parent."""
    targets = set()
    for folder in folders:
        target = folder
        while not os.path.isdir(target) and os.path.dirname(target) != target:
            target = os.path.dirname(target)
        targets.add(target)
    return frozenset(targets)


class FileEvents:
    """The watchdog observer over the folders of some files; thread-safe flags.

    ``wake`` is called on the observer's thread after a relevant event;
    :meth:`take` says, once, which kinds of file changed since the last call.
    """

    def __init__(self, wake: Callable[[], None], dotenv_paths: tuple[str, ...]) -> None:
        self._wake = wake
        self.dotenv_paths = dotenv_paths
        self._files = threading.Event()
        self._dotenv = threading.Event()
        self._observer: object | None = None
        #: the files whose changes may change a secret (``.env`` files aside)
        self._secret_paths: tuple[str, ...] = ()
        #: the folders the observer watches
        self._armed: frozenset[str] = frozenset()

    @property
    def pending(self) -> bool:
        return self._files.is_set() or self._dotenv.is_set()

    def take(self) -> tuple[bool, bool]:
        """(a watched file changed, a ``.env`` file changed) since the last call."""
        dotenv = self._dotenv.is_set()
        self._dotenv.clear()
        files = self._files.is_set()
        self._files.clear()
        return files, dotenv

    def changed(self, *, files: bool = False, dotenv: bool = False) -> None:
        """Say that files changed, as an event would, and wake the watcher."""
        if dotenv:
            self._dotenv.set()
        if files or dotenv:
            self._files.set()
            self._wake()

    def start(self, secret_paths: Iterable[str]) -> bool:
        """Watch the folders of ``secret_paths`` and the ``.env`` files; ``True`` if any is.

        Called again when the set of files changes (a reloaded ``.env``).
        """
        self._secret_paths = tuple(secret_paths)
        folders = self._folders()
        targets = watch_targets(folders)
        if not targets:
            self.stop()
            return False
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.warning(
                "watchdog is not installed; files are polled only"
                " (pip install 'envwrap-secrets[watch]')"
            )
            return False
        relevant = RelevantPaths(folders)
        events = self

        class Handler(FileSystemEventHandler):  # type: ignore[misc]
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = {
                    os.fsdecode(event.src_path),
                    os.fsdecode(getattr(event, "dest_path", b"") or ""),
                }
                if not any(relevant(p) for p in paths if p):
                    # another file in the same folder -- an --audit-log written
                    # there would otherwise wake the watcher at every record
                    return
                dotenv = any(os.path.abspath(p) in events.dotenv_paths for p in paths if p)
                events.changed(files=True, dotenv=dotenv)

        self.stop()
        observer = Observer()
        for folder in targets:
            try:
                observer.schedule(Handler(), folder, recursive=False)
            except OSError:  # gone again, or not readable: the poll still covers it
                log.warning("cannot watch a folder; polling it", folder=folder)
        self._armed = targets
        observer.daemon = True
        observer.start()
        self._observer = observer
        return True

    def rearm(self) -> None:
        """A folder appeared or went away: watch anew, on the folders themselves."""
        if self._observer is not None and watch_targets(self._folders()) != self._armed:
            self.start(self._secret_paths)

    def _folders(self) -> dict[str, set[str]]:
        return folders_of((*self._secret_paths, *self.dotenv_paths))

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
