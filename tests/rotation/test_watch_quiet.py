"""``--wait MIN[:MAX]`` (quiescence) and the audit of version-less secrets, on a made-up clock.

The watcher reports every change it sees; the quiet timer (owned by the rotation
policy and the sidecar) hands on the last one once things are quiet. Here the
watcher's reports go to a :class:`QuietTimer` whose timer is fired by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from envwrap.backends import BackendRegistry
from envwrap.environment import SecretEnvironment, parse_templates
from envwrap.errors import ConfigError
from envwrap.quiet import Quiescence, QuietTimer
from envwrap.resolve import fetch_all
from envwrap.telemetry import audit
from envwrap.values import parse_wait
from envwrap.watch import AUDIT_HEARTBEAT, Watcher
from testsupport.clock import Clock
from testsupport.helpers import assert_not_leaked, canary
from testsupport.recorder import Recorder

# --- Quiescence, the pure rule -----------------------------------------------------------


def test_a_lone_change_is_due_min_after_it() -> None:
    quiet = Quiescence(0.25, 2.0)
    assert quiet.deadline() is None and not quiet.due(0.0)
    quiet.observe(10.0)
    assert quiet.deadline() == 10.25
    assert not quiet.due(10.2)
    assert quiet.due(10.25)


def test_each_change_pushes_the_deadline_but_never_past_max() -> None:
    quiet = Quiescence(0.25, 2.0)
    for step in range(8):
        quiet.observe(10.0 + step * 0.2)  # every 200 ms: never quiet for 250 ms
    assert quiet.deadline() == pytest.approx(10.0 + 7 * 0.2 + 0.25)
    quiet.observe(11.9)
    assert quiet.deadline() == 12.0  # first + MAX, not 11.9 + MIN
    assert quiet.overdue(12.0) and not quiet.overdue(11.99)
    quiet.reset()
    assert quiet.deadline() is None


def test_zero_acts_at_once() -> None:
    quiet = Quiescence(0.0, 0.0)
    quiet.observe(5.0)
    assert quiet.due(5.0)


@pytest.mark.parametrize(("text", "expected"), [
    ("250ms:2s", (0.25, 2.0)), ("1s", (1.0, 4.0)), ("0", (0.0, 0.0)), ("100ms:100ms", (0.1, 0.1)),
])
def test_parse_wait(text: str, expected: tuple[float, float]) -> None:
    assert parse_wait(text) == expected


@pytest.mark.parametrize("text", ["2s:1s", "soon", "1s:later"])
def test_parse_wait_rejects_nonsense_naming_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--wait"):
        parse_wait(text, "--wait")


# --- the watcher with a file secret, driven by hand --------------------------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(canary("first"))
    return path


def no_timer(delay: float, call: object) -> object:
    """The tests fire the quiet timer by hand (``Watched.settle``)."""
    return lambda: None


class Watched:
    """A watcher of one file secret reporting to a quiet timer, and what reached the end."""

    def __init__(self, path: Path, clock: Clock, wait: tuple[float, float]) -> None:
        env = {"DB_PASSWORD": f"ref+file://{path}"}
        secrets = SecretEnvironment(env, [], parse_templates(env), [])
        registry = BackendRegistry({})
        fetched = fetch_all(secrets.locators(), registry, timeout=1)
        self.recorder = Recorder()
        self.quiet = QuietTimer(wait, self.recorder, clock=clock,
                                start_timer=no_timer)  # type: ignore[arg-type]
        self.watcher = Watcher(secrets, registry, fetched, self.quiet.offer, interval=60,
                               clock=clock)

    def check_files(self) -> None:
        """What a file-system event does."""
        self.watcher.check_files()

    def check_once(self) -> None:
        """A poll round."""
        self.watcher.check_once()

    def settle(self) -> None:
        """The quiet timer goes off (it acts only if the wait is over)."""
        self.quiet.fire()


def file_watcher(path: Path, clock: Clock, wait: tuple[float, float]) -> tuple[Watched, Recorder]:
    watched = Watched(path, clock, wait)
    return watched, watched.recorder


def test_a_burst_is_applied_once_with_the_final_content(secret_file: Path) -> None:
    clock = Clock()
    watcher, recorder = file_watcher(secret_file, clock, (0.25, 2.0))
    values = [canary(f"burst{i}") for i in range(10)]
    for value in values:
        secret_file.write_text(value)
        watcher.check_files()  # what a file-system event does
        clock.now += 0.05
    assert recorder.calls == []  # never quiet for 250 ms yet
    clock.now += 0.25
    watcher.settle()
    assert [env["DB_PASSWORD"] for env, _ in recorder.calls] == [values[-1]]
    watcher.settle()
    assert len(recorder.calls) == 1


def test_an_empty_read_during_a_slow_write_is_never_applied(secret_file: Path) -> None:
    clock = Clock()
    watcher, recorder = file_watcher(secret_file, clock, (0.25, 2.0))
    final = canary("slow")
    secret_file.write_text("")  # the truncate, seen on its own
    watcher.check_files()
    clock.now += 0.2
    watcher.settle()
    for end in range(4, len(final) + 4, 4):  # then pieces, 200 ms apart
        secret_file.write_text(final[:end])
        watcher.check_files()
        clock.now += 0.2
        watcher.settle()
    assert recorder.calls == []
    clock.now += 0.25
    watcher.settle()
    assert [env["DB_PASSWORD"] for env, _ in recorder.calls] == [final]


def test_a_change_found_by_the_poll_during_the_wait_starts_it_again(secret_file: Path) -> None:
    # no event for the last write (say, events are lost): the poll that finds it
    # before the wait is over starts MIN again, and the final content is applied
    clock = Clock()
    watcher, recorder = file_watcher(secret_file, clock, (0.25, 2.0))
    secret_file.write_text(canary("partial"))
    watcher.check_files()
    clock.now += 0.2
    final = canary("final")
    secret_file.write_text(final)
    watcher.check_once()
    clock.now += 0.1
    watcher.settle()
    assert recorder.calls == []
    clock.now += 0.15
    watcher.settle()
    assert [env["DB_PASSWORD"] for env, _ in recorder.calls] == [final]


def test_a_store_that_never_settles_is_applied_after_max(secret_file: Path) -> None:
    clock = Clock()
    watcher, recorder = file_watcher(secret_file, clock, (0.25, 1.0))
    last = ""
    for i in range(12):  # every 100 ms for 1.2 s
        last = canary(f"busy{i}")
        secret_file.write_text(last)
        watcher.check_files()
        clock.now += 0.1
        watcher.settle()
        if recorder.calls:
            break
    assert len(recorder.calls) == 1
    assert recorder.calls[0][0]["DB_PASSWORD"] == last
    assert clock.now - 1000.0 <= 1.0 + 0.1 + 1e-9


def test_negative_control_without_a_wait_every_write_is_a_change(secret_file: Path) -> None:
    clock = Clock()
    watcher, recorder = file_watcher(secret_file, clock, (0.0, 0.0))
    secret_file.write_text("")
    watcher.check_files()
    secret_file.write_text(canary("whole"))
    watcher.check_files()
    assert [env["DB_PASSWORD"] for env, _ in recorder.calls] == ["", recorder.calls[1][0]["DB_PASSWORD"]]


# --- audit of secrets without a version id -------------------------------------------------


@pytest.fixture
def audit_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "audit.jsonl"
    audit.configure(str(path))
    yield path
    audit.configure(None)


def accesses(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r["event"] == "access"]


def test_polls_of_an_unchanged_file_write_no_access_record_but_an_hourly_one(
    secret_file: Path, audit_log: Path
) -> None:
    clock = Clock()
    watcher, _ = file_watcher(secret_file, clock, (0.0, 0.0))
    for _ in range(5):
        clock.now += 60
        watcher.check_once()
    assert accesses(audit_log) == []
    value = canary("rotated")
    secret_file.write_text(value)
    watcher.check_once()
    assert len(accesses(audit_log)) == 1
    watcher.check_once()
    assert len(accesses(audit_log)) == 1
    clock.now += AUDIT_HEARTBEAT
    watcher.check_once()
    records = accesses(audit_log)
    assert len(records) == 2
    assert {r["variable"] for r in records} == {"DB_PASSWORD"}
    assert_not_leaked(value, audit_log.read_text())
