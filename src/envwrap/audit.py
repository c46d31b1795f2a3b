"""``--audit-log``: one JSON line per secret access, rotation, restart and signal.

Fields (absent when not applicable): ``time`` (UTC, ISO 8601), ``event``
(``access``, ``rotation``, ``restart``, ``signal``, ``exit``, ``render``),
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

__all__ = ["configure", "outcome_of", "record", "record_reads"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from envwrap.backends import Fetched
    from envwrap.refs import Locator, Reference

_lock = _thread.allocate_lock()
_target: dict[str, int | None] = {"fd": None}
_OUTCOMES = {64: "usage", 65: "not_found", 69: "unavailable", 77: "denied", 78: "config"}


def configure(path: str | None) -> None:
    """Open the audit log (``-`` is stderr); appends, mode 0600 when created."""
    if not path:
        return
    if path == "-":
        _target["fd"] = sys.stderr.fileno()
        return
    from envwrap.errors import ConfigError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"--audit-log {path!r}: cannot open ({exc.strerror})") from None
    _target["fd"] = fd


def outcome_of(exit_code: int) -> str:
    return _OUTCOMES.get(exit_code, "error")


def record(event: str, **fields: object) -> None:
    """Append one record; a failing audit log is reported once, never fatal."""
    fd = _target["fd"]
    if fd is None:
        return
    import json

    entry: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        + f".{int(time.time() * 1000) % 1000:03d}Z",
        "event": event,
    }
    entry.update({k: v for k, v in fields.items() if v is not None})
    line = redact(json.dumps(entry, ensure_ascii=False, default=str)) + "\n"
    with _lock:
        try:
            os.write(fd, line.encode())
        except OSError:
            from envwrap import log

            log.error("cannot write the audit log; auditing stops")
            _target["fd"] = None


def record_reads(
    uses: Iterable[tuple[str, Reference]],
    fetched: Mapping[Locator, Fetched],
    seconds: float,
) -> None:
    """One debug line and one ``access`` record per variable that read a secret."""
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
