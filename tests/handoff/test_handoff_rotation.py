"""The rotation side of rollback (docs/rotation.md): what is recorded, when a change is retried.

The supervisor's verdicts are delivered by a stand-in for it that records the
requests and lets the test answer them; the retry timer is real, with a short
first delay (real-time behaviour is covered end to end in test_handoff.py).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from envwrap.config import Settings
from envwrap.environment import Composed
from envwrap.process.supervisor import Rejected
from envwrap.refs import Locator
from envwrap.rotation import RotationPolicy, changed_variables
from envwrap.telemetry import audit, events
from testsupport.helpers import canary, wait_until


class Supervisor:
    """Records handoff/replace requests; the test settles them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], object]] = []
        self.lock = threading.Lock()

    def replace(self, environment: dict[str, str], done: object = None) -> None:
        with self.lock:
            self.requests.append(("replace", environment, done))

    def handoff(self, environment: dict[str, str], done: object = None) -> None:
        with self.lock:
            self.requests.append(("handoff", environment, done))

    def send(self, signum: int) -> None:
        raise AssertionError("not in these tests")

    def request_exit(self, code: int) -> None:
        raise AssertionError("not in these tests")

    def settle(self, index: int, outcome: object) -> None:
        done = self.requests[index][2]
        assert callable(done)
        done(outcome)


@pytest.fixture
def audit_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "audit.jsonl"
    before = set(events.sinks())
    audit.configure(str(path))
    yield path
    for sink in set(events.sinks()) - before:
        events.remove_sink(sink)
        if isinstance(sink, audit.AuditLog) and sink.fd is not None:
            os.close(sink.fd)


def records(path: Path, event: str) -> list[dict[str, object]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == event]


def settings(on_change: str, ready: str | None, interval: float = 300.0) -> Settings:
    result = Settings()
    result.argv = ["server"]
    result.watch = True
    result.on_change = on_change
    result.ready = ready
    result.interval = interval
    result.wait = (0.0, 0.0)  # --wait is the quiet timer's, tested on its own
    return result


def composed(**values: str) -> Composed:
    return Composed({"PATH": "/bin", **values}, list(values), list(values.values()))


LOC = {Locator("ref+file", "/run/secrets/db")}


@pytest.mark.parametrize(("on_change", "ready", "kind"),
                         [("handoff", "notify", "handoff"), ("restart", "2s", "replace")])
def test_a_rejected_change_is_recorded_and_retried_a_new_one_applied_at_once(
    on_change: str, ready: str, kind: str, audit_log: Path
) -> None:
    old, bad, good = canary(), canary(), canary()
    supervisor = Supervisor()
    handler = RotationPolicy(settings(on_change, ready), {"PATH": "/bin", "DB": old},
                              supervisor, retry_first=0.05)
    handler(composed(DB=bad, USER="app"), LOC)
    assert [(k, e["DB"]) for k, e, _ in supervisor.requests] == [(kind, bad)]
    assert records(audit_log, "rotation") == []  # nothing counts until the verdict

    supervisor.settle(0, Rejected(4242, 3, "it exited with code 3"))
    (rolled_back,) = records(audit_log, "rotation")
    assert rolled_back["outcome"] == "rolled_back"
    assert rolled_back["detail"] == "it exited with code 3; changed variables: DB, USER"
    assert handler.current["DB"] == old
    # the same change is tried again by itself
    wait_until(lambda: len(supervisor.requests) == 2, timeout=10)
    assert supervisor.requests[1][1]["DB"] == bad
    supervisor.settle(1, Rejected(4243, None, "not ready within 60s"))
    wait_until(lambda: len(supervisor.requests) == 3, timeout=10)

    # a new value in the store: applied at once; the pending attempt is superseded
    handler(composed(DB=good, USER="app"), LOC)
    assert supervisor.requests[3][1]["DB"] == good
    supervisor.settle(2, Rejected(4244, 3, "it exited with code 3"))  # stale: ignored
    supervisor.settle(3, 5151)
    outcomes = [r["outcome"] for r in records(audit_log, "rotation")]
    assert outcomes == ["rolled_back", "rolled_back", "applied"]
    assert handler.current["DB"] == good
    text = audit_log.read_text()
    for value in (old, bad, good):
        assert value not in text


def test_retries_back_off_from_thirty_seconds_up_to_the_interval(audit_log: Path) -> None:
    supervisor = Supervisor()
    handler = RotationPolicy(settings("handoff", "notify", interval=100.0), {"DB": "a"},
                              supervisor)
    delays = []
    original = handler._schedule_retry

    def capture(attempt: int, environment: dict[str, str], detail: str, composed: Composed,
                delay: float) -> None:
        delays.append(delay)
        original(attempt, environment, detail, composed, delay)
        handler._cancel_retry()

    handler._schedule_retry = capture  # type: ignore[method-assign]
    handler(composed(DB="b"), LOC)
    for _ in range(4):  # the same attempt rejected again and again
        supervisor.settle(0, Rejected(1, 1, "it exited with code 1"))
    assert delays == [30.0, 60.0, 100.0, 100.0]


def test_going_back_to_the_running_values_cancels_the_retry(audit_log: Path) -> None:
    supervisor = Supervisor()
    handler = RotationPolicy(settings("handoff", "notify"), {"PATH": "/bin", "DB": "a"},
                              supervisor, retry_first=0.2)
    handler(composed(DB="b"), LOC)
    supervisor.settle(0, Rejected(1, 1, "it exited with code 1"))
    handler(composed(DB="a"), LOC)  # the store was fixed by going back
    assert records(audit_log, "rotation")[-1]["outcome"] == "unchanged"
    assert handler._timer is None
    assert len(supervisor.requests) == 1


def test_without_ready_a_restart_counts_as_applied_at_once(audit_log: Path) -> None:
    supervisor = Supervisor()
    handler = RotationPolicy(settings("restart", None), {"DB": "a"}, supervisor)
    handler(composed(DB="b"), LOC)
    assert [r["outcome"] for r in records(audit_log, "rotation")] == ["applied"]
    assert [r["outcome"] for r in records(audit_log, "restart")] == ["ok"]
    assert supervisor.requests[0][2] is None


def test_changed_variables_are_names_only() -> None:
    assert changed_variables({"A": "1", "B": "2", "C": "3"}, {"A": "1", "B": "x", "D": "4"}) == [
        "B", "C", "D"]


def test_render_files_go_back_to_the_running_values_on_a_rollback(
    audit_log: Path, tmp_path: Path
) -> None:
    old, bad = canary(), canary()
    target = tmp_path / "db.env"
    config = settings("handoff", "notify")
    config.render = [str(target)]
    supervisor = Supervisor()
    handler = RotationPolicy(config, {"PATH": "/bin", "DB": old}, supervisor,
                              composed=composed(DB=old), retry_first=0.05)
    handler(composed(DB=bad), LOC)
    assert bad in target.read_text()  # before the new generation starts
    supervisor.settle(0, Rejected(1, 3, "it exited with code 3"))
    assert old in target.read_text() and bad not in target.read_text()
    wait_until(lambda: len(supervisor.requests) == 2, timeout=10)  # the retry renders again
    assert bad in target.read_text()
