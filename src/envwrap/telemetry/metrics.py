"""The metrics and readiness of ``--metrics`` (docs/metrics.md), derived from events.

:class:`Metrics` is a sink of :mod:`envwrap.telemetry.events`: nothing else in envwrap
counts anything. Each event updates a little state under one lock; a scrape
turns a snapshot of it into Prometheus families (:meth:`Metrics.collect`, the
only place that imports ``prometheus_client``). The same state answers
``/readyz`` (:meth:`Metrics.not_ready`).

Events and what they feed:

- ``resolved`` (the start-up resolution succeeded): readiness.
- ``running`` (published by the one owner of what runs: the rotation policy,
  the supervise mode at start, the sidecar): the version of each secret the
  running generation uses (``envwrap_secret_info``).
- ``access`` (ok): the store's last success.
- ``check`` (the watcher's probes and reads; failed reads of the start-up
  resolution's retries): ``envwrap_store_up``, ``envwrap_store_errors_total``,
  last success.
- ``lease``: ``envwrap_lease_expiry_timestamp_seconds``.
- ``start``, ``ready``, ``child_exit``: the child gauges and start counter.
- ``rotation``: ``envwrap_rotations_total``; ``failed`` makes ``/readyz`` 503
  until a later rotation succeeds.
- ``hold`` (held / released by ``--restart-limit``): ``/readyz``'s reason.
- ``cache`` (served / live; deleted and refused change nothing): ``envwrap_serving_cached``.

Labels hold names, paths and version ids only; never a value.
"""

from __future__ import annotations

import _thread
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

    from prometheus_client.metrics_core import Metric

__all__ = ["ERROR_KINDS", "Metrics", "watch_health"]

START_REASONS = ("initial", "rotation", "rollback")
ROTATION_OUTCOMES = ("applied", "unchanged", "rolled_back", "failed")
#: ``check`` outcomes that are their own ``kind``; anything else is ``other``
ERROR_KINDS = ("unavailable", "denied", "not_found")

#: one use of a secret: variable, store, path, key (a variable may use several)
Use = tuple[str, str, str, str]


class Metrics:
    """Event sink and Prometheus collector; see the module docstring.

    ``needs_child``: ``/readyz`` waits for a ready
    generation (supervise mode); without it (the sidecar), for the first
    resolution and what it published (its files written, then ``running``).
    """

    def __init__(
        self,
        *,
        needs_child: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.needs_child = needs_child
        self.clock = clock
        self._lock = _thread.allocate_lock()
        #: bumped by every event that changes the state (``/metrics`` caches by it)
        self.version = 0
        self.resolved = False
        #: a ``running`` event arrived: what runs is known (the sidecar's files are written)
        self.published = False
        self.child_pid: int | None = None
        self.child_up = False
        self.child_ready = False
        self.serving_cached = False
        self.rotation_error: str | None = None
        self.held: str | None = None
        self.starts = dict.fromkeys(START_REASONS, 0)
        self.rotations = dict.fromkeys(ROTATION_OUTCOMES, 0)
        #: use -> version, as the running generation has it (the ``running`` event)
        self.running: dict[Use, str] = {}
        self.last_success: dict[tuple[str, str], float] = {}
        self.store_up: dict[str, bool] = {}
        self.store_errors: dict[tuple[str, str], int] = {}
        self.lease_expiry: dict[str, float] = {}
        #: liveness checks of the threads ``/healthz`` vouches for: name -> alive?
        self.health: dict[str, Callable[[], bool]] = {}

    # -- the sink -------------------------------------------------------------------------

    def handle(self, event: str, fields: Mapping[str, object]) -> None:
        handler = self._HANDLERS.get(event)
        if handler is not None:
            with self._lock:
                handler(self, fields)
                self.version += 1

    def _on_resolved(self, fields: Mapping[str, object]) -> None:
        self.resolved = True

    def _on_access(self, fields: Mapping[str, object]) -> None:
        if fields.get("outcome") != "ok" or not fields.get("variable"):
            return
        self._success(_text(fields.get("store")), _text(fields.get("path")))

    def _on_running(self, fields: Mapping[str, object]) -> None:
        self.published = True
        uses = fields.get("uses")
        if isinstance(uses, list):
            self.running = {(str(v), str(s), str(p), str(k)): str(version)
                            for v, s, p, k, version in uses}

    def _on_check(self, fields: Mapping[str, object]) -> None:
        store, path = _text(fields.get("store")), _text(fields.get("path"))
        outcome = _text(fields.get("outcome"))
        if outcome == "ok":
            self._success(store, path)
            return
        self.store_up[store] = False
        kind = outcome if outcome in ERROR_KINDS else "other"
        self.store_errors[store, kind] = self.store_errors.get((store, kind), 0) + 1

    def _success(self, store: str, path: str) -> None:
        self.store_up[store] = True
        self.last_success[store, path] = self.clock()

    def _on_lease(self, fields: Mapping[str, object]) -> None:
        path, expires = _text(fields.get("path")), fields.get("expires")
        if fields.get("outcome") == "revoked" or not isinstance(expires, int | float):
            self.lease_expiry.pop(path, None)
        else:
            self.lease_expiry[path] = float(expires)

    def _on_start(self, fields: Mapping[str, object]) -> None:
        reason = _text(fields.get("reason")) or "initial"
        self.starts[reason] = self.starts.get(reason, 0) + 1
        pid = fields.get("pid")
        self.child_pid = pid if isinstance(pid, int) else None
        self.child_up, self.child_ready = True, False

    def _on_ready(self, fields: Mapping[str, object]) -> None:
        pid = fields.get("pid")
        if pid is None or pid == self.child_pid:
            self.child_ready = True

    def _on_child_exit(self, fields: Mapping[str, object]) -> None:
        if fields.get("pid") == self.child_pid:
            self.child_up = self.child_ready = False

    def _on_rotation(self, fields: Mapping[str, object]) -> None:
        outcome = _text(fields.get("outcome"))
        self.rotations[outcome] = self.rotations.get(outcome, 0) + 1
        if outcome == "failed":
            self.rotation_error = _text(fields.get("detail")) or "unknown error"
            return
        self.rotation_error = None

    def _on_hold(self, fields: Mapping[str, object]) -> None:
        self.held = _text(fields.get("detail")) if fields.get("outcome") == "held" else None

    def _on_cache(self, fields: Mapping[str, object]) -> None:
        outcome = fields.get("outcome")
        if outcome in ("served", "live"):  # not "deleted", "refused": what runs is unchanged
            self.serving_cached = outcome == "served"

    _HANDLERS: dict[str, Callable[[Metrics, Mapping[str, object]], None]] = {
        "resolved": _on_resolved,
        "access": _on_access,
        "running": _on_running,
        "check": _on_check,
        "lease": _on_lease,
        "start": _on_start,
        "ready": _on_ready,
        "child_exit": _on_child_exit,
        "rotation": _on_rotation,
        "hold": _on_hold,
        "cache": _on_cache,
    }

    # -- the endpoints ----------------------------------------------------------------------

    def not_alive(self) -> str | None:
        """``/healthz``: ``None`` when healthy, else the name of a dead thread."""
        for name, alive in list(self.health.items()):
            if not alive():
                return f"the {name} is not running"
        return None

    def not_ready(self) -> str | None:
        """``/readyz``: ``None`` when ready, else why not (one line, no value)."""
        with self._lock:
            if not self.resolved:
                return "resolving the secrets"
            if not self.needs_child and not self.published:
                return "writing the files"
            if self.needs_child and not self.child_up:
                return "the program is not running"
            if self.needs_child and not self.child_ready:
                return "the program is not ready yet"
            if self.rotation_error is not None:
                return f"the last rotation failed: {self.rotation_error}"
            if self.held is not None:
                return f"a restart is held by --restart-limit: {self.held}"
            return None

    def collect(self) -> Iterator[Metric]:
        """The Prometheus families of one consistent snapshot (a custom collector)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            child_up, child_ready = self.child_up, self.child_ready
            cached = self.serving_cached
            starts = {(k,): v for k, v in self.starts.items()}
            rotations = {(k,): v for k, v in self.rotations.items()}
            running = {(*use, version): 1 for use, version in self.running.items()}
            last_success = dict(self.last_success)
            store_up = {(k,): float(v) for k, v in self.store_up.items()}
            store_errors = dict(self.store_errors)
            leases = {(k,): v for k, v in self.lease_expiry.items()}

        def family(kind: Callable[..., Metric], name: str, doc: str, labels: list[str],
                   samples: Mapping[Any, float]) -> Metric:
            metric = kind(name, doc, labels=labels)
            for values, value in sorted(samples.items()):
                metric.add_metric(list(values), value)  # type: ignore[attr-defined]
            return metric

        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        yield gauge("envwrap_child_up", "1 while a generation of the program runs",
                    value=child_up)
        yield gauge("envwrap_child_ready", "1 when the current generation passed --ready",
                    value=child_ready)
        yield family(counter, "envwrap_child_starts", "generations started", ["reason"], starts)
        yield family(counter, "envwrap_rotations", "detected changes and what became of them",
                     ["outcome"], rotations)
        yield family(gauge, "envwrap_secret_info",
                     "which version each variable of the running generation comes from",
                     ["variable", "store", "path", "key", "version"], running)
        yield family(gauge, "envwrap_secret_last_success_timestamp_seconds",
                     "last successful check or read", ["store", "path"], last_success)
        yield family(gauge, "envwrap_store_up", "0 while the last attempt failed", ["store"],
                     store_up)
        yield family(counter, "envwrap_store_errors", "failed attempts", ["store", "kind"],
                     store_errors)
        yield family(gauge, "envwrap_lease_expiry_timestamp_seconds",
                     "when the lease of a dynamic secret expires", ["path"], leases)
        yield gauge("envwrap_serving_cached",
                    "1 while the environment came from the fallback cache", value=cached)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def watch_health(name: str, alive: Callable[[], bool]) -> None:
    """Let ``/healthz`` vouch for a thread (no-op without ``--metrics``)."""
    from envwrap.telemetry import events

    for sink in events.sinks():
        if isinstance(sink, Metrics):
            sink.health[name] = alive
