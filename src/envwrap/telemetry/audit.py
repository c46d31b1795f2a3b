"""``--audit-log``: one JSON line per secret access, rotation, restart and signal.

The audit log is one sink of :mod:`envwrap.telemetry.events`; :func:`record` emits to
every sink (the metrics too). It leaves out ``check`` events (see ``SKIPPED``).

Fields (absent when not applicable): ``time`` (UTC, ISO 8601), ``event``
(``access``, ``resolved``, ``reload``, ``rotation``, ``start``, ``ready``,
``child_exit``, ``restart``, ``hold``, ``lease``, ``revoke``, ``signal``, ``exit``,
``render``, ``write`` -- ``envwrap import``, its ``detail`` the keys written),
``variable``, ``store``, ``path``, ``key``, ``version``, ``outcome`` (``ok`` or
the error class: ``not_found``, ``denied``, ``unavailable``, ``invalid``,
``config``, ``usage``), ``duration_ms``, ``pid``, ``signal``, ``file``,
``detail``. Never a value: records are built from names and metadata only,
and pass through the redaction filter as a second line of defence.
"""

from __future__ import annotations

import _thread  # not `threading`: this module is on the start-up path
import os
import sys
import time

from envwrap.secret import redact
from envwrap.telemetry import events

__all__ = [
    "AuditLog",
    "configure",
    "outcome_of",
    "record",
    "record_lease",
    "record_reads",
    "record_sources",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from envwrap.backends import Fetched
    from envwrap.refs import Locator, Reference

_OUTCOMES = {64: "usage", 65: "not_found", 69: "unavailable", 77: "denied", 78: "config"}
#: events the audit log leaves out: a store check every poll interval per secret
#: would drown the accesses; failures still appear as ``access`` records
SKIPPED = frozenset({"check", "running"})


class AuditLog:
    """The ``--audit-log`` sink of :mod:`envwrap.telemetry.events`: one JSON line per event."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        self._lock = _thread.allocate_lock()

    def handle(self, event: str, fields: Mapping[str, object]) -> None:
        fd = self.fd
        if fd is None or event in SKIPPED:
            return
        import json

        now = time.time()
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now * 1000) % 1000:03d}Z",
            "event": event,
        }
        entry.update({k: v for k, v in fields.items() if v is not None})
        line = redact(json.dumps(entry, ensure_ascii=False, default=str)) + "\n"
        with self._lock:
            try:
                os.write(fd, line.encode())
            except OSError:
                from envwrap import log

                log.error("cannot write the audit log; auditing stops")
                self.fd = None


def configure(path: str | None) -> None:
    """Open the audit log (``-`` is stderr) and subscribe it; appends, mode 0600, never
    through a symbolic link or into a FIFO."""
    if not path:
        return
    if path == "-":
        events.add_sink(AuditLog(sys.stderr.fileno()))
        return
    from envwrap.safe_files import open_append

    events.add_sink(AuditLog(open_append(path, "--audit-log")))


def outcome_of(exit_code: int) -> str:
    return _OUTCOMES.get(exit_code, "error")


#: every call site's name for :func:`envwrap.telemetry.events.emit`
record = events.emit


def record_reads(
    uses: Iterable[tuple[str, Reference]],
    fetched: Mapping[Locator, Fetched],
    seconds: float,
) -> None:
    """One debug line and one ``access`` record per variable that read a secret,
    and one ``lease`` record per dynamic secret read (its expiry, never its id)."""
    from envwrap import log

    for variable, ref in uses:
        if ref.locator not in fetched:
            continue
        fields = {
            "variable": variable,
            "store": ref.locator.scheme,
            "path": ref.locator.path_with_query,
            "key": ref.key,
            "version": fetched[ref.locator].version,
        }
        log.debug("resolved", **fields)
        record("access", **fields, outcome="ok", duration_ms=round(seconds * 1000, 1))
    for locator, item in fetched.items():
        if item.lease is not None and item.lease.duration > 0:
            record_lease(locator, item.lease.duration, "obtained")


def record_sources(
    uses: Iterable[tuple[str, Reference]],
    fetched: Mapping[Locator, Fetched],
    files: Iterable[str],
) -> None:
    """A ``reload`` record: the ``.env`` files changed; ``uses`` lists every
    variable's secret now (variable, store, path, key, version), so that what
    the program will run with is known exactly, variables removed included."""
    snapshot = [
        [variable, ref.locator.scheme, ref.locator.path_with_query, ref.key or "",
         fetched[ref.locator].version or ""]
        for variable, ref in uses if ref.locator in fetched
    ]
    record("reload", file=", ".join(files), outcome="ok", uses=snapshot)


def record_running(
    uses: Iterable[tuple[str, Reference]], fetched: Mapping[Locator, Fetched]
) -> None:
    """A ``running`` event (for ``/metrics``; not written to the audit log): which
    version of each secret the running generation uses (variable, store, path,
    key, version)."""
    snapshot = [
        [variable, ref.locator.scheme, ref.locator.path_with_query, ref.key or "",
         fetched[ref.locator].version or ""]
        for variable, ref in uses if ref.locator in fetched
    ]
    record("running", uses=snapshot)


def record_lease(locator: Locator, duration: float, outcome: str) -> None:
    """A ``lease`` record: ``obtained``, ``renewed`` (expiring in ``duration``
    seconds) or ``revoked``."""
    expires = round(time.time() + duration, 3) if outcome != "revoked" else None
    record("lease", store=locator.scheme, path=locator.path_with_query,
           outcome=outcome, expires=expires)
