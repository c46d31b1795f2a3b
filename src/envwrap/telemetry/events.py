"""One stream of events, any number of sinks.

Everything that happens -- a secret read, a store check, a rotation and its
outcome, a generation started, ready or ended, a signal -- is *emitted* once,
here, as a name and fields (names and metadata only, never a value). Sinks
subscribe: the ``--audit-log`` writer (:mod:`envwrap.telemetry.audit`) and the
Prometheus metrics (:mod:`envwrap.telemetry.metrics`) are two; a webhook or an
OpenTelemetry exporter would be one more class with a ``handle`` method. Because
the audit log and the metrics are fed by the same events, they cannot disagree.

Callers keep using ``audit.record(event, **fields)``, which is :func:`emit`.
With no sink registered an event costs one function call.
"""

from __future__ import annotations

import _thread  # not `threading`: this module is on the start-up path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Protocol

    class Sink(Protocol):
        """Receives every event; must be quick, thread-safe and never raise."""

        def handle(self, event: str, fields: Mapping[str, object]) -> None: ...

__all__ = ["add_sink", "emit", "remove_sink", "sinks"]

_lock = _thread.allocate_lock()
#: the sinks, as a tuple replaced whole (so emit iterates without the lock)
_registered: list[tuple[Sink, ...]] = [()]


def add_sink(sink: Sink) -> None:
    with _lock:
        _registered[0] = (*_registered[0], sink)


def remove_sink(sink: Sink) -> None:
    with _lock:
        _registered[0] = tuple(s for s in _registered[0] if s is not sink)


def sinks() -> tuple[Sink, ...]:
    return _registered[0]


def emit(event: str, **fields: object) -> None:
    """Hand one event to every sink; a failing sink is reported, never fatal."""
    for sink in _registered[0]:
        try:
            sink.handle(event, fields)
        except Exception as exc:
            from envwrap import log

            log.error(f"event sink {type(sink).__name__} failed ({type(exc).__name__})")
