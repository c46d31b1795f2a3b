"""Canary hygiene (issue 7): a unique value in every kind of store, every command
and mode at debug level, every error path; the canaries may appear only in the
program's own output (without --mask), in --render files and in ``export``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.helpers import canary, run_envwrap, wait_until

PRINT_ALL = ["python3", "-c", (
    "import os, sys\n"
    "names = ['DB_PASSWORD', 'VAULT_PW', 'SM_PW', 'SSM_TOKEN', 'DATABASE_URL']\n"
    "for n in names:\n"
    "    print(n, os.environ.get(n), flush=True)\n"
    "    print(n, os.environ.get(n), file=sys.stderr, flush=True)\n"
)]


@dataclass
class World:
    env: dict[str, str]
    values: dict[str, str]
    workdir: Path
    audit: Path
    openbao: object = field(repr=False)

    def leaked(self, *texts: str) -> list[str]:
        return [name for name, value in self.values.items() if any(value in t for t in texts)]

    def audit_text(self) -> str:
        return self.audit.read_text() if self.audit.exists() else ""


@pytest.fixture
def world(openbao, aws, workdir: Path, base_env: dict[str, str]) -> World:  # type: ignore[no-untyped-def]
    values = {
        "file": canary("CANARYfile"),
        "vault": canary("CANARYvault"),
        "aws-sm": canary("CANARYsm"),
        "aws-ssm": canary("CANARYssm"),
    }
    secrets = workdir / "secrets"
    secrets.mkdir()
    (secrets / "db.json").write_text(json.dumps({"password": values["file"], "user": "app"}))
    path = f"canary/{os.urandom(4).hex()}"
    openbao.kv2_put(path, {"password": values["vault"], "user": "app"})
    aws.sm.create_secret(Name="canary/app", SecretString=json.dumps({"password": values["aws-sm"]}))
    aws.ssm.put_parameter(Name="/canary/token", Value=values["aws-ssm"], Type="SecureString")
    env = {
        **base_env, **openbao.env(), **aws.env,
        "DB_PASSWORD": f"ref+file://{secrets}/db.json#password",
        "VAULT_PW": f"vault://secret/{path}#password",
        "SM_PW": "aws-sm://canary/app#password",
        "SSM_TOKEN": "aws-ssm:///canary/token",
        "DATABASE_URL": f"postgresql://app:${{vault://secret/{path}#password}}@db:5432/workflows",
        "ENVWRAP_LOG_LEVEL": "debug",
    }
    world = World(env, values, workdir, workdir / "audit.log", openbao)
    world.env["VAULT_PATH"] = path
    return world


def test_every_command_at_debug_level_keeps_values_out(world: World) -> None:
    audit = ["--audit-log", str(world.audit)]
    quiet = run_envwrap([*audit, "--", "true"], env=world.env)
    assert quiet.returncode == 0, quiet.stderr
    assert world.leaked(quiet.stdout, quiet.stderr) == []
    init = run_envwrap([*audit, "--init", "--", "true"], env=world.env)
    assert init.returncode == 0, init.stderr
    assert world.leaked(init.stdout, init.stderr) == []
    check = run_envwrap(["check", *audit], env=world.env)
    assert check.returncode == 0, check.stderr
    assert world.leaked(check.stdout, check.stderr) == []
    assert "VAULT_PW" in check.stdout and "SSM_TOKEN" in check.stdout
    # allowed: the program's own output, and export
    shown = run_envwrap([*audit, "--", *PRINT_ALL], env=world.env)
    assert shown.returncode == 0, shown.stderr
    assert sorted(world.leaked(shown.stdout)) == sorted(world.values)
    assert sorted(world.leaked(shown.stderr)) == sorted(world.values)  # the child's stderr...
    envwrap_lines = "\n".join(line for line in shown.stderr.splitlines() if line.startswith("envwrap"))
    assert "resolved" in envwrap_lines and world.leaked(envwrap_lines) == []  # ...not envwrap's
    exported = run_envwrap(["export", *audit, "--format", "json"], env=world.env)
    assert sorted(world.leaked(exported.stdout)) == sorted(world.values)
    assert world.leaked(exported.stderr) == []
    records = [json.loads(line) for line in world.audit_text().splitlines()]
    assert {r["variable"] for r in records if r["event"] == "access"} >= {
        "DB_PASSWORD", "VAULT_PW", "SM_PW", "SSM_TOKEN", "DATABASE_URL"}
    assert world.leaked(world.audit_text()) == []


def test_mask_hides_every_value_from_both_streams(world: World) -> None:
    masked = run_envwrap(["--mask", "--", *PRINT_ALL], env=world.env)
    assert masked.returncode == 0, masked.stderr
    assert world.leaked(masked.stdout, masked.stderr) == []
    assert masked.stdout.count("*****") >= 5


def test_error_paths_keep_values_out(world: World, base_env: dict[str, str]) -> None:
    env, path = world.env, world.env["VAULT_PATH"]
    secrets = world.workdir / "secrets"
    (secrets / "nul").write_bytes(world.values["file"].encode() + b"\x00")
    (secrets / "big").write_text(world.values["file"] + "x" * 200_000)
    (secrets / "evil.json").write_text(json.dumps({"LD_PRELOAD": world.values["file"]}))
    (world.workdir / "bad.env").write_text(f"OK=1\nBROKEN='{world.values['file']}\n")
    cases: list[tuple[list[str], dict[str, str], int]] = [
        (["--", "true"], {**env, "X": f"vault://secret/{path}#nope"}, 65),
        (["--", "true"], {**env, "X": "aws-sm://canary/app#nope"}, 65),
        (["--", "true"], {**env, "X": f"ref+file://{secrets}/db.json#nope"}, 65),
        (["--", "true"], {**env, "X": "aws-sm://canary/missing"}, 65),
        (["--", "true"], {**env, "X": "aws-ssm:///canary/missing"}, 65),
        (["--", "true"], {**env, "X": f"vault://secret/{path}?version=99"}, 65),
        (["--", "true"], {**env, "X": f"ref+file://{secrets}/nul"}, 65),
        (["--", "true"], {**env, "X": f"ref+file://{secrets}/big"}, 65),
        (["--from", f"ref+file://{secrets}/evil.json", "--", "true"], env, 65),
        (["--env-file", "bad.env", "--", "true"], env, 78),
        (["--", "true"], {**env, "VAULT_TOKEN": "not-a-token"}, 77),
        (["--start-timeout", "1s", "--", "true"], {**env, "VAULT_ADDR": "http://127.0.0.1:9"}, 69),
        (["--debug", "--", "true"], {**env, "X": f"vault://secret/{path}#nope"}, 65),
        (["--debug", "--", "true"], {**env, "X": f"ref+file://{secrets}/db.json#/password/x"}, 65),
        (["--", "true"], {**env, "X": "vault://secret/x?version=oops"}, 64),
        (["--", "no-such-program-xyz"], env, 127),
        (["--init", "--", "no-such-program-xyz"], env, 127),
    ]
    for args, case_env, code in cases:
        result = run_envwrap(["--audit-log", str(world.audit), *args], env=case_env,
                             cwd=world.workdir)
        assert result.returncode == code, (args, result.stderr)
        assert "envwrap" in result.stderr
        assert world.leaked(result.stdout, result.stderr) == [], (args, result.stderr)
        if "--debug" not in args:
            assert "Traceback" not in result.stderr, (args, result.stderr)
    assert world.leaked(world.audit_text()) == []


def test_watch_and_render_keep_values_in_the_rendered_file_only(world: World) -> None:
    rendered = world.workdir / "secrets.json"
    new_value = canary("CANARYrotated")
    world.values["rotated"] = new_value
    proc = subprocess.Popen(
        [*envwrap_command(), "--watch", "--interval", "500ms", "--render", str(rendered),
         "--audit-log", str(world.audit), "--", "sleep", "300"],
        env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: rendered.exists() and world.values["vault"] in rendered.read_text())
        world.openbao.kv2_put(world.env["VAULT_PATH"], {"password": new_value, "user": "app"})  # type: ignore[attr-defined]
        wait_until(lambda: new_value in rendered.read_text(), timeout=15)
        wait_until(lambda: '"event": "restart"' in world.audit_text(), timeout=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert rendered.stat().st_mode & 0o777 == 0o600
    assert world.leaked(out, err) == []
    assert world.leaked(world.audit_text()) == []
    assert '"event": "rotation"' in world.audit_text()
    records = [json.loads(line) for line in world.audit_text().splitlines()]
    vault_reads = [r for r in records if r["event"] == "access" and r.get("variable") == "VAULT_PW"]
    assert len(vault_reads) >= 2 and vault_reads[-1]["version"] == "2"  # the re-read is audited
