"""Which mount a path is on, and whether it is KV version 2, detected once per mount.

As the ``vault kv`` CLI does: ``GET sys/internal/ui/mounts/PATH``. When the
detection is denied or the server has no such endpoint, the path is read as
it is (``None``).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from envwrap.backends.vault.auth import Connection
from envwrap.backends.vault.errors import Denied, Missing
from envwrap.backends.vault.transport import body, quoted

__all__ = ["Mount", "Mounts", "below"]


class Mount(NamedTuple):
    """A mount as detected: its path (``secret/``), whether it is KV version 2, and
    whether it is a KV engine at all (``envwrap import`` writes only to one)."""

    path: str
    kv2: bool
    kv: bool = True


class Mounts:
    """The mounts seen so far, and the detection of new ones; thread-safe."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._mounts: dict[str, Mount] = {}
        self._segment_locks: dict[str, threading.Lock] = {}
        #: requests made to sys/internal/ui/mounts, for tests and benchmarks
        self.detections = 0

    def of(self, path: str) -> Mount | None:
        """The mount under ``path``, detected once per mount; ``None``: read as it is.

        Detections of paths that share a first segment are serialised, so that
        fifty concurrent reads on one mount cost one detection; paths with
        different first segments cannot share a mount and detect in parallel.
        """
        found = self._cached(path)
        if found is not None:
            return found
        with self._segment_lock(path.partition("/")[0]):
            found = self._cached(path)
            if found is not None:
                return found
            found = self._detect(path)
            if found is not None:
                with self._lock:
                    self._mounts[found.path] = found
            return found

    def _cached(self, path: str) -> Mount | None:
        best: Mount | None = None
        with self._lock:
            mounts = list(self._mounts.values())
        for mount in mounts:
            inside = path.startswith(mount.path) or path + "/" == mount.path
            if inside and (best is None or len(mount.path) > len(best.path)):
                best = mount
        return best

    def _segment_lock(self, segment: str) -> threading.Lock:
        with self._lock:
            return self._segment_locks.setdefault(segment, threading.Lock())

    def _detect(self, path: str) -> Mount | None:
        with self._lock:
            self.detections += 1
        try:
            response = self._connection.get(f"sys/internal/ui/mounts/{quoted(path)}")
        except (Denied, Missing):
            # 403: no access to the preflight endpoint, or no such mount; 404: an
            # old server. The plain read that follows gives the precise answer.
            return None
        data = body(response).get("data")
        if not isinstance(data, dict) or not data.get("path"):
            return None
        relative = _relative_mount(path, str(data["path"]))
        if relative is None:
            return None
        options = data.get("options")
        version = options.get("version") if isinstance(options, dict) else None
        kv = data.get("type") in ("kv", "generic")
        return Mount(relative, kv and str(version) == "2", kv)


def below(path: str, mount: Mount) -> str:
    """The secret's name below a KV v2 mount; an API path loses its ``data/``."""
    name = path[len(mount.path):] if path.startswith(mount.path) else ""
    return name[len("data/"):] if name.startswith("data/") else name


def _relative_mount(path: str, mount_path: str) -> str | None:
    """The mount path as the reference writes it; ``None`` if it does not prefix ``path``.

    In a namespace the server may answer with the namespace in front of the
    mount; drop leading segments until it prefixes ``path``, as the Vault CLI does.
    """
    candidate = mount_path if mount_path.endswith("/") else mount_path + "/"
    while candidate and not (path.startswith(candidate) or path + "/" == candidate):
        candidate = candidate.partition("/")[2]
    return candidate or None
