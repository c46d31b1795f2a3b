"""``ref+memory://NAME[?version=N][#KEY]``: an in-process store for tests and examples.

Secrets are put with :meth:`MemoryBackend.put`; every put makes a new version,
like Vault KV v2, and ``?version=N`` / ``?version=-1`` reach older ones.
The store is shared by every instance in the process.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from envwrap.backends.contract import Backend, Fetched
from envwrap.errors import EnvwrapError, NotFoundError
from envwrap.refs import Locator

__all__ = ["MemoryBackend"]

_lock = threading.Lock()
_versions: dict[str, list[str | Mapping[str, Any]]] = {}
_faults: dict[str, EnvwrapError] = {}


class MemoryBackend(Backend):
    scheme = "memory"

    #: every read, in order; lets tests count store calls
    reads: list[str] = []

    @staticmethod
    def put(name: str, data: str | Mapping[str, Any]) -> int:
        """Store a new version of ``name``; returns its version number (from 1)."""
        with _lock:
            history = _versions.setdefault(name, [])
            history.append(dict(data) if isinstance(data, Mapping) else data)
            return len(history)

    @staticmethod
    def fail(name: str, error: EnvwrapError | None) -> None:
        """Make reads of ``name`` raise ``error`` (``None`` heals the store)."""
        with _lock:
            if error is None:
                _faults.pop(name, None)
            else:
                _faults[name] = error

    @staticmethod
    def reset() -> None:
        with _lock:
            _versions.clear()
            _faults.clear()
            MemoryBackend.reads.clear()

    def read(self, locator: Locator) -> Fetched:
        with _lock:
            MemoryBackend.reads.append(locator.path)
            fault = _faults.get(locator.path)
            if fault is not None:
                raise type(fault)(fault.message)
            history = list(_versions.get(locator.path, ()))
        if not history:
            raise NotFoundError("no such secret")
        number = _version_number(locator, len(history))
        if not 1 <= number <= len(history):
            raise NotFoundError(f"no version {locator.param('version')}")
        return Fetched(history[number - 1], version=str(number))

    def probe(self, locator: Locator) -> str | None:
        with _lock:
            fault = _faults.get(locator.path)
            if fault is not None:
                raise type(fault)(fault.message)
            current = len(_versions.get(locator.path, ()))
        if current == 0:
            raise NotFoundError("no such secret")
        return str(_version_number(locator, current))


def _version_number(locator: Locator, current: int) -> int:
    requested = locator.param("version")
    if requested is None:
        return current
    number = int(requested)
    return current + number if number < 0 else number
