"""The watcher's decisions, driven round by round against the in-memory store."""

from __future__ import annotations

from envwrap.backends import BackendRegistry
from envwrap.backends.memory import MemoryBackend
from envwrap.environment import SecretEnvironment, parse_templates
from envwrap.errors import AuthError, StoreUnavailableError
from envwrap.refs import Locator
from envwrap.resolve import fetch_all
from envwrap.watch import Watcher
from testsupport.clock import Clock
from testsupport.helpers import canary
from testsupport.recorder import Recorder


def make_watcher(env: dict[str, str]) -> tuple[Watcher, Recorder, SecretEnvironment]:
    secrets = SecretEnvironment(env, [], parse_templates(env), [])
    registry = BackendRegistry({})
    fetched = fetch_all(secrets.locators(), registry, timeout=1)
    recorder = Recorder()
    watcher = Watcher(secrets, registry, fetched, recorder, interval=60)
    return watcher, recorder, secrets


def test_a_new_version_is_applied_once_with_every_variable_from_it() -> None:
    first, second = canary("v1"), canary("v2")
    MemoryBackend.put("app/db", {"user": "app", "password": first})
    watcher, recorder, _ = make_watcher({
        "DB_PASSWORD": "ref+memory://app/db#password",
        "DATABASE_URL": "pg://${ref+memory://app/db#user}:${ref+memory://app/db#password}@db",
    })
    watcher.check_once()
    assert recorder.calls == []
    MemoryBackend.put("app/db", {"user": "app", "password": second})
    MemoryBackend.reads.clear()
    watcher.check_once()
    assert len(recorder.calls) == 1
    environment, changed = recorder.calls[0]
    assert environment["DB_PASSWORD"] == second
    assert environment["DATABASE_URL"] == f"pg://app:{second}@db"
    assert changed == {Locator("memory", "app/db")}
    assert MemoryBackend.reads == ["app/db"]  # probed cheaply, read once
    watcher.check_once()
    assert len(recorder.calls) == 1


def test_unchanged_version_costs_no_read() -> None:
    MemoryBackend.put("a", "x" * 8)
    watcher, recorder, _ = make_watcher({"A": "ref+memory://a"})
    MemoryBackend.reads.clear()
    for _ in range(3):
        watcher.check_once()
    assert MemoryBackend.reads == []
    assert recorder.calls == []


def test_new_version_with_the_same_value_changes_nothing() -> None:
    value = canary()
    MemoryBackend.put("a", value)
    watcher, recorder, _ = make_watcher({"A": "ref+memory://a"})
    MemoryBackend.put("a", value)
    watcher.check_once()
    assert recorder.calls == []


def test_store_outage_keeps_values_and_applies_after_recovery() -> None:
    MemoryBackend.put("a", "first-value")
    watcher, recorder, _ = make_watcher({"A": "ref+memory://a"})
    MemoryBackend.fail("a", StoreUnavailableError("connection refused"))
    assert watcher.check_once() is True
    assert recorder.calls == []
    MemoryBackend.fail("a", None)
    MemoryBackend.put("a", "second-value")
    assert watcher.check_once() is False
    assert recorder.calls[-1][0]["A"] == "second-value"


def test_permanent_error_keeps_old_values() -> None:
    MemoryBackend.put("a", "first-value")
    watcher, recorder, _ = make_watcher({"A": "ref+memory://a"})
    MemoryBackend.fail("a", AuthError("permission denied"))
    watcher.check_once()
    watcher.check_once()
    assert recorder.calls == []
    assert watcher.fetched[Locator("memory", "a")].data == "first-value"


def test_a_new_version_without_the_key_keeps_old_values() -> None:
    MemoryBackend.put("a", {"password": "first-value"})
    watcher, recorder, _ = make_watcher({"A": "ref+memory://a#password"})
    MemoryBackend.put("a", {"renamed": "x"})
    watcher.check_once()
    assert recorder.calls == []


def test_pinned_version_never_changes() -> None:
    MemoryBackend.put("a", "one-value")
    MemoryBackend.put("a", "two-value")
    watcher, recorder, _ = make_watcher({"OLD": "ref+memory://a?version=-1",
                                         "PINNED": "ref+memory://a?version=1"})
    MemoryBackend.put("a", "three-value")
    watcher.check_once()
    assert len(recorder.calls) == 1
    environment, changed = recorder.calls[0]
    assert environment["OLD"] == "two-value" and environment["PINNED"] == "one-value"
    assert changed == {Locator("memory", "a", (("version", "-1"),))}


# -- --splay: the wait comes before the read ----------------------------------------------


def test_with_splay_the_read_waits_polls_go_on_and_a_second_change_is_folded_in() -> None:
    first, second, third = canary("v1"), canary("v2"), canary("v3")
    MemoryBackend.put("a", first)
    env = {"A": "ref+memory://a"}
    secrets = SecretEnvironment(env, [], parse_templates(env), [])
    registry = BackendRegistry({})
    fetched = fetch_all(secrets.locators(), registry, timeout=1)
    recorder, clock = Recorder(), Clock()
    watcher = Watcher(secrets, registry, fetched, recorder, interval=1, splay=30, clock=clock)
    MemoryBackend.reads.clear()
    MemoryBackend.put("a", second)
    watcher.check_once()
    assert MemoryBackend.reads == [] and recorder.calls == []  # the wait comes first
    MemoryBackend.put("a", third)
    for _ in range(29):  # polls go on during the wait, and read nothing
        clock.now += 1
        watcher.check_once()
        if recorder.calls:
            break
    clock.now += 2  # past the longest wait
    watcher.check_once()
    assert MemoryBackend.reads == ["a"]  # one read, of the latest version
    assert [env["A"] for env, _ in recorder.calls] == [third]
    watcher.check_once()
    assert MemoryBackend.reads == ["a"] and len(recorder.calls) == 1


def test_without_splay_a_change_is_read_and_reported_in_the_round_that_sees_it() -> None:
    MemoryBackend.put("a", canary("v1"))
    watcher, recorder, _ = make_watcher({"A": "ref+memory://a"})
    MemoryBackend.reads.clear()
    MemoryBackend.put("a", canary("v2"))
    watcher.check_once()
    assert MemoryBackend.reads == ["a"] and len(recorder.calls) == 1
