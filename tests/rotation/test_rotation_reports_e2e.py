"""What ``envwrap --watch`` says and reports about a rotation, end to end, on a real OpenBao.

- A KV v2 secret deleted (metadata and all) and written again -- its versions
  start over at 1, as when a dev server is restarted and seeded -- is a change.
- A new version that cannot be composed (the key is gone) gets a ``rotation
  failed`` audit record and makes ``/readyz`` 503 until a good version arrives;
  the program keeps running on its values meanwhile.
- At the default log level, one line says a rotation was applied, naming the
  variables that changed and what was done (restarted, PID to PID; signalled);
  one line says a change is held by ``--restart-limit``. Never a value.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testsupport.fixtures_vault import OpenBao, free_port
from testsupport.helpers import canary, fp, wait_until
from testsupport.rotation import VAR, Start, sh_child, unique_path, vault_env

pytestmark = pytest.mark.slow

DEFAULT_LEVEL = ("--log-level", "warning")



def after_start(stderr: str) -> str:
    """stderr without envwrap's one line at start (checked to be there, and first)."""
    first, _, rest = stderr.partition("\n")
    assert first.startswith("envwrap: running "), stderr
    return rest

def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def records(path: Path, event: str) -> list[dict[str, object]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_a_kv2_secret_deleted_and_written_again_is_a_change(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("seeded-again")
    assert openbao.kv2_put(path, {"value": old}) == 1
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child())
    first = run.wait_start(fp(old))
    openbao.client.secrets.kv.v2.delete_metadata_and_all_versions(path, mount_point="secret")
    assert openbao.kv2_put(path, {"value": new}) == 1  # the same version number
    second = run.wait_start(fp(new))
    run.settle()
    assert run.starts() == [(first, fp(old)), (second, fp(new))]
    run.assert_clean(old, new)


def test_negative_control_the_same_version_number_with_the_same_creation_is_no_change(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    value = canary("steady")
    openbao.kv2_put(path, {"value": value})
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child())
    first = run.wait_start(fp(value))
    time.sleep(2.5)  # five polls
    assert run.starts() == [(first, fp(value))]
    assert "secret changed" not in run.stderr()


def test_a_version_without_the_key_is_a_failed_rotation_until_a_good_one_arrives(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start, tmp_path: Path
) -> None:
    path = unique_path()
    old, wrong, good = canary("old"), canary("wrong-key"), canary("good")
    openbao.kv2_put(path, {"value": old})
    audit_log = tmp_path / "audit.jsonl"
    port = free_port()
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child(), *DEFAULT_LEVEL,
                        "--metrics", f"127.0.0.1:{port}", "--audit-log", str(audit_log))
    first = run.wait_start(fp(old))
    wait_until(lambda: readyz(port) == 200, timeout=15)

    openbao.kv2_put(path, {"renamed": wrong})  # the key the program needs is gone
    wait_until(lambda: any(r["outcome"] == "failed" for r in records(audit_log, "rotation")),
               timeout=15)
    failed = next(r for r in records(audit_log, "rotation") if r["outcome"] == "failed")
    assert VAR in str(failed["detail"])
    assert readyz(port) == 503
    time.sleep(1.5)  # three polls: still failed, still running on the old value
    assert readyz(port) == 503
    assert run.starts() == [(first, fp(old))]
    assert run.process.poll() is None
    assert "cannot be used" in run.stderr() and VAR in run.stderr()

    openbao.kv2_put(path, {"value": good})
    second = run.wait_start(fp(good))
    wait_until(lambda: readyz(port) == 200, timeout=15)
    assert run.starts() == [(first, fp(old)), (second, fp(good))]
    run.assert_clean(old, wrong, good)
    for value in (old, wrong, good):
        assert value not in audit_log.read_text()


def test_negative_control_readyz_is_200_after_a_good_rotation(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("new")
    openbao.kv2_put(path, {"value": old})
    port = free_port()
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child(),
                        "--metrics", f"127.0.0.1:{port}")
    run.wait_start(fp(old))
    openbao.kv2_put(path, {"value": new})
    run.wait_start(fp(new))
    wait_until(lambda: readyz(port) == 200, timeout=15)


def test_at_the_default_level_a_restart_is_one_line_naming_variables_and_pids(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("new")
    openbao.kv2_put(path, {"value": old, "user": "app"})
    env = {**vault_env(base_env, openbao, path), "DB_USER": f"vault://secret/{path}#user"}
    run = envwrap_watch(env, sh_child(), *DEFAULT_LEVEL)
    first = run.wait_start(fp(old))
    # at start, one line (how many secrets, how often, what a change does); then the rotation
    assert after_start(run.stderr()) == ""
    openbao.kv2_put(path, {"value": new, "user": "app"})
    second = run.wait_start(fp(new))
    wait_until(lambda: "rotation applied" in run.stderr(), timeout=10)
    run.settle()
    lines = after_start(run.stderr()).splitlines()
    assert lines == [f"envwrap: rotation applied: {VAR} changed; restarted the program,"
                     f" pid {first} -> {second}"]
    run.assert_clean(old, new)


def test_at_the_default_level_a_signal_and_a_held_change_are_one_line_each(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start, tmp_path: Path
) -> None:
    path = unique_path()
    values = [canary(f"v{i}") for i in range(3)]
    openbao.kv2_put(path, {"value": values[0]})
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child("trap '' HUP; "),
                        *DEFAULT_LEVEL, "--on-change", "signal")
    first = run.wait_start(fp(values[0]))
    openbao.kv2_put(path, {"value": values[1]})
    wait_until(lambda: "rotation applied" in run.stderr(), timeout=15)
    assert re.fullmatch(rf"envwrap: rotation applied: {VAR} changed; signalled the "
                        rf"program \(SIGHUP\), pid {first}", after_start(run.stderr()).strip()), run.stderr()

    held = envwrap_watch(vault_env(base_env, openbao, path), sh_child(), *DEFAULT_LEVEL,
                         "--restart-limit", "1/60s")
    held.wait_start(fp(values[1]))
    openbao.kv2_put(path, {"value": values[2]})
    wait_until(lambda: "rotation applied" in held.stderr(), timeout=15)
    openbao.kv2_put(path, {"value": values[0]})
    wait_until(lambda: "held" in held.stderr(), timeout=15)
    held_lines = [line for line in held.stderr().splitlines() if "held" in line]
    assert len(held_lines) == 1 and f"changed variables: {VAR}" in held_lines[0]
    run.assert_clean(*values)
    held.assert_clean(*values)


def test_at_the_default_level_a_handoff_is_one_line_naming_both_pids(
    openbao: OpenBao, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    path = unique_path()
    old, new = canary("old"), canary("new")
    openbao.kv2_put(path, {"value": old})
    run = envwrap_watch(vault_env(base_env, openbao, path), sh_child(), *DEFAULT_LEVEL,
                        "--on-change", "handoff", "--ready", "300ms")
    first = run.wait_start(fp(old))
    openbao.kv2_put(path, {"value": new})
    second = run.wait_start(fp(new))
    wait_until(lambda: "rotation applied" in run.stderr(), timeout=15)
    run.settle()
    # a program that binds no port of its own: the warning about handoff without --listen
    # comes first, then the start line
    warning, _, rest = run.stderr().partition("\n")
    assert "--on-change handoff without --listen" in warning
    assert after_start(rest).splitlines() == [
        f"envwrap: rotation applied: {VAR} changed; handed off to a new generation,"
        f" pid {first} -> {second}"]
    run.assert_clean(old, new)
