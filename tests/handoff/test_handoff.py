"""Generations end to end (docs/rotation.md): handoff, readiness, rollback, no generation left.

Real envwrap, real children, real sockets and signals: the child and the harness
(:class:`~testsupport.handoff.Run`) are described in ``testsupport/handoff.py``.

Secrets are ``ref+file://`` files (fast to rotate); one test uses OpenBao.
"""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pytest

from testsupport.fixtures_vault import OpenBao
from testsupport.handoff import HANDOFF, VAR, Run
from testsupport.helpers import canary, fp, wait_until
from testsupport.supervise_support import gone

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    return not gone(pid)


def serving(run: Run, value: str) -> int:
    """The pid of the generation started with ``value``, once it is ready."""
    pid = run.started(value)
    run.wait_event("ready", pid=pid)
    return pid


def start(runs: list[Run], tmp_path: Path, base_env: dict[str, str], value: str,
          *options: str, **kwargs: object) -> Run:
    run = Run(tmp_path, base_env, value, *options, **kwargs)  # type: ignore[arg-type]
    runs.append(run)
    return run


def test_old_generation_is_stopped_only_after_the_new_one_is_ready(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, second = canary("good"), canary("good")
    # a slow start, so that the overlap is long enough to look at
    run = start(runs, tmp_path, base_env, first, *HANDOFF, env={"READY_DELAY": "1.5"})
    old = run.started(first)
    run.wait_line(f"ready {old} {fp(first)}")
    run.wait_event("ready", pid=old)
    assert run.get() == (old, fp(first))

    run.rotate(second)
    new = run.started(second)
    # both generations run; the old one still answers and has not been asked to stop
    assert alive(old) and alive(new)
    assert run.get() == (old, fp(first))
    assert f"signal {old} SIGTERM" not in run.out.text()
    run.wait_line(f"signal {old} SIGTERM")
    assert run.line_index(f"ready {new} {fp(second)}") < run.line_index(f"signal {old} SIGTERM")
    run.wait_event("rotation", outcome="applied")
    wait_until(lambda: not alive(old), timeout=20)
    assert run.get() == (new, fp(second))

    assert run.stop() == 0
    assert f"signal {new} SIGTERM" in run.out.text()
    starts = [(e["pid"], e["reason"]) for e in run.events("start")]
    assert starts == [(old, "initial"), (new, "rotation")]
    assert {e["pid"] for e in run.events("ready")} == {old, new}
    assert {(e["pid"], e["code"]) for e in run.events("child_exit")} == {(old, 0), (new, 0)}
    # the order of events: new ready, then applied, then the old one's exit
    kinds = [(e["event"], e.get("pid")) for e in run.events()
             if e["event"] in ("ready", "child_exit")]
    assert kinds.index(("ready", new)) < kinds.index(("child_exit", old))
    run.assert_clean(first, second)


def test_a_generation_that_exits_is_rolled_back_and_a_later_value_applied(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, bad, good = canary("good"), canary("bad"), canary("good")
    run = start(runs, tmp_path, base_env, first, *HANDOFF)
    old = serving(run, first)

    run.rotate(bad)
    rejected = run.started(bad)
    record = run.wait_event("rotation", outcome="rolled_back")
    assert VAR in str(record["detail"]) and "code 3" in str(record["detail"])
    assert {"pid": rejected, "code": 3}.items() <= run.wait_event("child_exit", pid=rejected).items()
    # the old generation kept serving, untouched
    assert run.get() == (old, fp(first))
    assert f"signal {old}" not in run.out.text()
    assert VAR in run.err.text() and "rolled back" in run.err.text()

    run.rotate(good)  # a new change is applied at once, not after the retry delay
    new = run.started(good)
    run.wait_event("rotation", outcome="applied")
    wait_until(lambda: not alive(old), timeout=20)
    assert run.get() == (new, fp(good))
    assert run.stop() == 0
    run.assert_clean(first, bad, good)


def test_a_generation_never_ready_is_rolled_back_despite_a_foreign_ready(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, hang = canary("good"), canary("hang")
    run = start(runs, tmp_path, base_env, first, *HANDOFF, "--ready-timeout", "3s")
    old = serving(run, first)

    run.rotate(hang)
    stuck = run.started(hang)
    match = wait_until(lambda: re.search(rf"^hanging {stuck} (@\S+)$", run.out.text(), re.M))
    assert isinstance(match, re.Match)
    # a process outside the generation claims it is ready: ignored (not its sender)
    name = match.group(1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", "\0" + name[1:])
    record = run.wait_event("rotation", outcome="rolled_back")
    assert "not ready within 3s" in str(record["detail"]) and VAR in str(record["detail"])
    assert not any(e.get("pid") == stuck for e in run.events("ready"))
    assert not [e for e in run.events("rotation") if e.get("outcome") == "applied"]
    run.wait_line(f"signal {stuck} SIGTERM")
    wait_until(lambda: not alive(stuck), timeout=20)
    assert alive(old)
    assert run.get() == (old, fp(first))
    assert run.stop() == 0
    run.assert_clean(first, hang)


def test_restart_mode_with_ready_starts_the_previous_environment_again(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, bad, good = canary("good"), canary("bad"), canary("good")
    run = start(runs, tmp_path, base_env, first, "--ready", "notify", "--listen", "127.0.0.1:0")
    serving(run, first)

    run.rotate(bad)
    run.started(bad)
    run.wait_event("rotation", outcome="rolled_back")
    again = run.wait_event("start", reason="rollback")
    run.wait_event("ready", pid=again["pid"])
    assert run.get() == (again["pid"], fp(first))
    assert [e["outcome"] for e in run.events("restart")] == ["ok"]

    run.rotate(good)
    new = run.started(good)
    run.wait_event("rotation", outcome="applied")
    run.wait_event("ready", pid=new)
    assert run.get() == (new, fp(good))
    assert run.stop() == 0
    run.assert_clean(first, bad, good)


def test_sigkill_of_envwrap_during_a_handoff_leaves_no_generation(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, hang = canary("good"), canary("hang")
    run = start(runs, tmp_path, base_env, first, *HANDOFF)
    old = serving(run, first)
    run.rotate(hang)
    stuck = run.started(hang)
    assert alive(old) and alive(stuck)
    os.kill(run.process.pid, signal.SIGKILL)
    run.process.wait(10)
    # each generation has PR_SET_PDEATHSIG: both die with envwrap
    wait_until(lambda: not alive(old) and not alive(stuck), timeout=20)
    run.assert_clean(first, hang)


def test_a_stop_during_a_handoff_reaches_both_generations(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, hang = canary("good"), canary("hang")
    run = start(runs, tmp_path, base_env, first, *HANDOFF)
    old = serving(run, first)
    run.rotate(hang)
    stuck = run.started(hang)
    wait_until(lambda: f"hanging {stuck} " in run.out.text(), timeout=20)
    assert run.stop() == 0  # the current generation's code
    # once each: a second SIGTERM means "force quit" to many programs
    assert run.out.text().count(f"signal {old} SIGTERM") == 1
    assert run.out.text().count(f"signal {stuck} SIGTERM") == 1
    assert not alive(old) and not alive(stuck)


def test_handoff_with_openbao(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str], openbao: OpenBao
) -> None:
    first, second = canary("good"), canary("good")
    openbao.kv2_put("handoff", {"value": first})
    run = start(runs, tmp_path, {**base_env, **openbao.env()}, first, *HANDOFF,
                secret_ref="vault://secret/handoff#value")
    old = serving(run, first)
    openbao.kv2_put("handoff", {"value": second})
    new = run.started(second)
    run.wait_event("rotation", outcome="applied")
    wait_until(lambda: not alive(old), timeout=20)
    assert run.get() == (new, fp(second))
    assert run.stop() == 0
    run.assert_clean(first, second)


def grandchild_of(run: Run, pid: int) -> int:
    match = wait_until(lambda: re.search(rf"^grandchild {pid} (\d+)$", run.out.text(), re.M))
    assert isinstance(match, re.Match)
    return int(match.group(1))


def test_sigkill_reaches_the_old_generations_tree_only(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, second = canary("stubborn"), canary("good")
    run = start(runs, tmp_path, base_env, first, *HANDOFF, "--kill-timeout", "1s",
                env={"GRANDCHILD": "1"})
    old = run.started(first)
    old_grandchild = grandchild_of(run, old)
    run.wait_event("ready", pid=old)
    run.rotate(second)
    new = run.started(second)
    new_grandchild = grandchild_of(run, new)
    run.wait_event("rotation", outcome="applied")
    # the old generation ignores SIGTERM: SIGKILL after --kill-timeout, to its tree only
    wait_until(lambda: not alive(old) and not alive(old_grandchild), timeout=30)
    wait_until(lambda: "sent SIGKILL to its process tree" in run.err.text(), timeout=10)
    assert alive(new) and alive(new_grandchild)
    assert run.get() == (new, fp(second))
    assert run.stop() == 0  # the new generation's code; its grandchild is killed at the end
    wait_until(lambda: not alive(new_grandchild), timeout=20)
    run.assert_clean(first, second)


def test_signals_and_mask_follow_the_current_generation(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, second = canary("good"), canary("good")
    run = start(runs, tmp_path, base_env, first, *HANDOFF, "--mask",
                env={"PRINT_SECRET": "1"})
    old = serving(run, first)
    os.kill(run.process.pid, signal.SIGUSR1)
    run.wait_line(f"signal {old} SIGUSR1")
    run.rotate(second)
    new = run.started(second)
    run.wait_event("rotation", outcome="applied")
    run.wait_line(f"signal {old} SIGTERM")
    os.kill(run.process.pid, signal.SIGUSR1)
    run.wait_line(f"signal {new} SIGUSR1")
    assert run.out.text().count("SIGUSR1") == 2
    # both generations printed their secret; --mask hid both
    assert f"value {old} " in run.out.text() and f"value {new} " in run.out.text()
    assert run.stop() == 0
    run.assert_clean(first, second)


def test_when_the_previous_environment_fails_too_envwrap_exits_with_its_code(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, bad = canary("good"), canary("bad")
    flag = tmp_path / "fail-from-now-on"
    run = start(runs, tmp_path, base_env, first, "--ready", "notify", "--listen", "127.0.0.1:0",
                env={"FAIL_FLAG": str(flag)})
    serving(run, first)
    flag.write_text("")
    run.rotate(bad)
    assert run.process.wait(30) == 4  # the rolled-back generation's code
    run.stop()
    assert [e["reason"] for e in run.events("start")] == ["initial", "rotation", "rollback"]
    assert [e["code"] for e in run.events("child_exit")] == [0, 3, 4]
    assert "fails with the previous environment too" in run.err.text()
    run.assert_clean(first, bad)


def test_restart_mode_stops_a_generation_never_ready_and_starts_the_previous_again(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, hang = canary("good"), canary("hang")
    run = start(runs, tmp_path, base_env, first, "--ready", "notify", "--ready-timeout", "2s",
                "--listen", "127.0.0.1:0")
    serving(run, first)
    run.rotate(hang)
    stuck = run.started(hang)
    record = run.wait_event("rotation", outcome="rolled_back")
    assert "not ready within 2s" in str(record["detail"])
    run.wait_line(f"signal {stuck} SIGTERM")
    again = run.wait_event("start", reason="rollback")
    run.wait_event("ready", pid=again["pid"])
    assert not alive(stuck)
    assert run.get() == (again["pid"], fp(first))
    assert run.stop() == 0
    run.assert_clean(first, hang)


def test_when_the_program_ends_on_its_own_a_retiring_generation_goes_too(
    runs: list[Run], tmp_path: Path, base_env: dict[str, str]
) -> None:
    first, second = canary("stubborn"), canary("good")
    run = start(runs, tmp_path, base_env, first, *HANDOFF, "--kill-timeout", "60s",
                env={"GRANDCHILD": "1"})
    old = serving(run, first)
    old_grandchild = grandchild_of(run, old)
    run.rotate(second)
    new = serving(run, second)
    run.wait_event("rotation", outcome="applied")
    assert alive(old) and alive(old_grandchild)  # deaf to SIGTERM, 60s before SIGKILL
    os.kill(new, signal.SIGTERM)  # the program ends on its own: so does envwrap
    assert run.process.wait(20) == 0
    wait_until(lambda: not alive(old) and not alive(old_grandchild), timeout=20)
    run.assert_clean(first, second)
