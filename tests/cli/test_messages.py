"""What a person reads: the start line of supervision, and ``check --format json`` for CI."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from testsupport import envwrap_command
from testsupport.fixtures_vault import OpenBao
from testsupport.helpers import LineCollector, assert_not_leaked, canary, run_envwrap, wait_until


def secrets_in(folder: Path, openbao: OpenBao) -> tuple[str, str, int]:
    """A .env with one Vault and two file references: the two values, the Vault version."""
    vault_value, file_value = canary("vault"), canary("file")
    version = openbao.kv2_put("messages/app", {"password": vault_value})
    (folder / "token").write_text(file_value)
    (folder / ".env").write_text(
        "PORT=3000\n"
        "DB_PASSWORD=vault://secret/messages/app#password\n"
        f"TOKEN=ref+file://{folder}/token\n"
        f"TOKEN_AGAIN=ref+file://{folder}/token\n"
    )
    return vault_value, file_value, version


def test_supervision_says_one_line_at_start_without_values_or_paths(
    workdir: Path, base_env: dict[str, str], openbao: OpenBao
) -> None:
    *values, _ = secrets_in(workdir, openbao)
    env = {**base_env, **openbao.env()}
    watched = run_envwrap(["--watch", "--interval", "5s", "--", "true"], env=env)
    assert watched.returncode == 0, watched.stderr
    assert watched.stderr == (
        "envwrap: running true with 3 secrets (1 from vault, 2 from file); "
        "checking for changes every 5s; on a change: restart\n"
    )
    signalled = run_envwrap(["--watch", "--on-change", "signal", "--reload-signal", "USR2",
                             "--", "true"], env=env)
    assert "every 60s; on a change: signal SIGUSR2\n" in signalled.stderr
    init = run_envwrap(["--init", "--", "true"], env=env)
    assert init.stderr == ("envwrap: running true with 3 secrets (1 from vault, 2 from file); "
                           "not watching for changes (--watch does)\n")
    quiet = run_envwrap(["--init", "--log-level", "error", "--", "true"], env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""
    exec_mode = run_envwrap(["--", "true"], env=env)
    assert exec_mode.returncode == 0 and exec_mode.stderr == ""
    as_json = run_envwrap(["--init", "--log-format", "json", "--", "true"], env=env)
    record = json.loads(as_json.stderr)
    assert record["level"] == "notice" and record["message"].startswith("running true with 3")
    for result in (watched, signalled, init, as_json):
        assert "secret/messages" not in result.stderr and str(workdir) not in result.stderr
        for value in values:
            assert_not_leaked(value, result.stdout, result.stderr)


def test_the_sidecar_says_one_line_at_start(
    workdir: Path, base_env: dict[str, str], openbao: OpenBao
) -> None:
    *values, _ = secrets_in(workdir, openbao)
    proc = subprocess.Popen(
        [*envwrap_command(), "sidecar", "--render", str(workdir / "out.env"), "--target-name",
         "no-such-program", "--interval", "2s"],
        env={**base_env, **openbao.env()}, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = LineCollector(proc.stderr)  # type: ignore[arg-type]
        wait_until(lambda: lines.lines, timeout=20)
        assert lines.lines[0] == (
            f"envwrap: sidecar: 3 secrets (1 from vault, 2 from file) in {workdir}/out.env; "
            f"checking for changes every 2s; on a change: render {workdir}/out.env, then send "
            "SIGHUP to process name no-such-program\n"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    for value in values:
        assert_not_leaked(value, lines.text())


def test_check_format_json_lists_every_reference_for_a_ci_gate(
    workdir: Path, base_env: dict[str, str], openbao: OpenBao
) -> None:
    *values, version = secrets_in(workdir, openbao)
    env = {**base_env, **openbao.env()}
    result = run_envwrap(["check", "--format", "json"], env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"variable": "DB_PASSWORD", "store": "vault", "path": "secret/messages/app",
         "key": "password", "version": str(version)},
        {"variable": "TOKEN", "store": "file", "path": f"{workdir}/token", "key": None,
         "version": None},
        {"variable": "TOKEN_AGAIN", "store": "file", "path": f"{workdir}/token", "key": None,
         "version": None},
    ]
    from_env = run_envwrap(["check"], env={**env, "ENVWRAP_FORMAT": "json"})
    assert json.loads(from_env.stdout) == json.loads(result.stdout)
    (workdir / "empty").mkdir()
    nothing = run_envwrap(["check", "--format", "json"], env=env, cwd=workdir / "empty")
    assert nothing.returncode == 0 and json.loads(nothing.stdout) == []
    with (workdir / ".env").open("a") as dotenv:
        dotenv.write("MISSING=vault://secret/messages/app#nope\n")
    failing = run_envwrap(["check", "--format", "json"], env=env)
    assert failing.returncode == 65 and failing.stdout == ""
    assert "MISSING" in failing.stderr
    for value in values:
        assert_not_leaked(value, result.stdout, result.stderr, failing.stderr)
