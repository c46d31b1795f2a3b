"""``envwrap import``: a .env's values into a real OpenBao and a real moto, through the CLI.

Each test runs the written .env through ``envwrap -- program`` and compares the
environment the program gets with the one the original .env gave it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testsupport.fixtures_aws import MotoServer
from testsupport.fixtures_vault import OpenBao
from testsupport.helpers import assert_not_leaked, canary, run_envwrap

PRINT_ENV = ["python3", "-c", "import json,os; print(json.dumps(dict(os.environ)))"]


def program_env(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, str]:
    result = run_envwrap([*args, "--", *PRINT_ENV], env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    found: dict[str, str] = json.loads(result.stdout)
    return found


def write_dotenv(folder: Path) -> dict[str, str]:
    """A .env of the kind a team has today; returns its secret values."""
    values = {"DB_PASSWORD": canary("db"), "API_KEY": canary("api"),
              "JWT_SECRET": canary("jwt") + " with spaces '\" $x"}
    quoted_jwt = values["JWT_SECRET"].replace('"', '\\"')
    (folder / ".env").write_text(
        "# the service's settings\n"
        "PORT=3001\n"
        "NODE_ENV=development\n"
        "\n"
        f"DB_PASSWORD={values['DB_PASSWORD']}\n"
        f"export API_KEY='{values['API_KEY']}'\n"
        f'JWT_SECRET="{quoted_jwt}"\n'
        "DB_URL=postgres://app:${DB_PASSWORD}@db/app\n"
        "FROM_FILE=ref+file:///etc/hostname\n"
    )
    return values


def outputs(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    return result.stdout, result.stderr


def test_import_into_openbao_then_run_gives_the_same_values(
    workdir: Path, base_env: dict[str, str], openbao: OpenBao
) -> None:
    secrets = write_dotenv(workdir)
    env = {**base_env, **openbao.env()}
    before = program_env([], env, workdir)
    result = run_envwrap(["import", "--to", "vault://secret/import/app", "--exclude",
                          "PORT,NODE_ENV", "--write", ".env.new"], env=env, cwd=workdir)
    assert result.returncode == 0, result.stderr
    for value in [*secrets.values(), before["DB_URL"]]:
        assert_not_leaked(value, *outputs(result), (workdir / ".env.new").read_text())
    assert "wrote 4 keys to vault://secret/import/app (version 1)" in result.stdout
    assert "DB_PASSWORD" in result.stdout and "FROM_FILE (already a reference)" in result.stdout
    stored = openbao.client.secrets.kv.v2.read_secret_version(
        path="import/app", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    assert stored == {name: before[name] for name in ("DB_PASSWORD", "API_KEY", "JWT_SECRET",
                                                      "DB_URL")}
    written = (workdir / ".env.new").read_text()
    assert written.startswith("# the service's settings\nPORT=3001\nNODE_ENV=development\n\n")
    assert "export API_KEY=vault://secret/import/app#API_KEY\n" in written
    assert "FROM_FILE=ref+file:///etc/hostname\n" in written
    after = program_env(["--env-file", ".env.new"], env, workdir)
    names = ("PORT", "NODE_ENV", "DB_PASSWORD", "API_KEY", "JWT_SECRET", "DB_URL", "FROM_FILE")
    assert {n: after[n] for n in names} == {n: before[n] for n in names}


def test_an_existing_secret_needs_force_and_dry_run_writes_nothing(
    workdir: Path, base_env: dict[str, str], openbao: OpenBao
) -> None:
    secrets = write_dotenv(workdir)
    openbao.kv2_put("import/taken", {"OLD": "kept"})
    env = {**base_env, **openbao.env()}
    dry = run_envwrap(["import", "--to", "vault://secret/import/taken", "--write", ".env",
                       "--dry-run"], env=env, cwd=workdir)
    assert dry.returncode == 0, dry.stderr
    assert "would write 6 keys to vault://secret/import/taken" in dry.stdout
    assert "nothing written (--dry-run)" in dry.stdout
    assert "DB_PASSWORD=" + secrets["DB_PASSWORD"] in (workdir / ".env").read_text()
    refused = run_envwrap(["import", "--to", "vault://secret/import/taken", "--write", ".env"],
                          env=env, cwd=workdir)
    assert refused.returncode == 78
    assert "vault://secret/import/taken" in refused.stderr and "--force" in refused.stderr
    assert "DB_PASSWORD=" + secrets["DB_PASSWORD"] in (workdir / ".env").read_text()
    stored = openbao.client.secrets.kv.v2.read_secret_version(
        path="import/taken", mount_point="secret", raise_on_deleted_version=True)["data"]
    assert stored["data"] == {"OLD": "kept"} and stored["metadata"]["version"] == 1
    forced = run_envwrap(["import", "--to", "vault://secret/import/taken", "--write", ".env",
                          "--force", "--only", "DB_PASSWORD,API_KEY"], env=env, cwd=workdir)
    assert forced.returncode == 0, forced.stderr
    assert "(version 2)" in forced.stdout
    for value in secrets.values():
        for text in (dry, refused, forced):
            assert_not_leaked(value, *outputs(text))
    after = program_env([], env, workdir)
    assert after["DB_PASSWORD"] == secrets["DB_PASSWORD"]
    assert after["API_KEY"] == secrets["API_KEY"] and after["JWT_SECRET"] == secrets["JWT_SECRET"]
    text = (workdir / ".env").read_text()
    assert secrets["DB_PASSWORD"] not in text and secrets["JWT_SECRET"].split()[0] in text


def test_import_into_aws_secrets_manager(
    workdir: Path, base_env: dict[str, str], aws: MotoServer
) -> None:
    secrets = write_dotenv(workdir)
    env = {**base_env, **aws.env}
    before = program_env([], env, workdir)
    result = run_envwrap(["import", "--to", "aws-sm://prod/app", "--exclude", "PORT",
                          "--exclude", "NODE_ENV", "--write", ".env.aws"], env=env, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "wrote 4 keys to aws-sm://prod/app (version " in result.stdout
    stored = json.loads(aws.sm.get_secret_value(SecretId="prod/app")["SecretString"])
    assert stored["DB_PASSWORD"] == secrets["DB_PASSWORD"] and set(stored) == {
        "DB_PASSWORD", "API_KEY", "JWT_SECRET", "DB_URL"}
    again = run_envwrap(["import", "--to", "aws-sm://prod/app"], env=env, cwd=workdir)
    assert again.returncode == 78 and "--force" in again.stderr
    assert "aws-sm://prod/app" in again.stderr
    for value in [*secrets.values(), before["DB_URL"]]:
        assert_not_leaked(value, *outputs(result), *outputs(again),
                          (workdir / ".env.aws").read_text())
    after = program_env(["--env-file", ".env.aws"], env, workdir)
    for name in ("PORT", "NODE_ENV", "DB_PASSWORD", "API_KEY", "JWT_SECRET", "DB_URL"):
        assert after[name] == before[name], name
    forced = run_envwrap(["import", "--to", "aws-sm://prod/app", "--force", "--only",
                          "API_KEY", "--audit-log", "audit.jsonl"], env=env, cwd=workdir)
    assert forced.returncode == 0, forced.stderr
    audit_text = (workdir / "audit.jsonl").read_text()
    (record,) = [json.loads(line) for line in audit_text.splitlines()]
    assert {k: record[k] for k in ("event", "store", "path", "detail", "outcome")} == {
        "event": "write", "store": "aws-sm", "path": "prod/app", "detail": "keys: API_KEY",
        "outcome": "ok"}
    assert record["version"] in forced.stdout
    for value in secrets.values():
        assert_not_leaked(value, audit_text)
    versions = aws.sm.list_secret_version_ids(SecretId="prod/app")["Versions"]
    assert len(versions) == 2


def test_import_refuses_what_it_cannot_do(workdir: Path, base_env: dict[str, str]) -> None:
    secret = canary()
    (workdir / ".env").write_text(f"TOKEN={secret}\n")
    cases = [
        (["import"], 64, "--to"),
        (["import", "--to", "vault://secret/app#TOKEN"], 64, "no #KEY"),
        (["import", "--to", "not a reference"], 64, "reference"),
        (["import", "--to", "ref+file:///tmp/x"], 64, "cannot write file://"),
        (["import", "--to", "vault://secret/app", "--only", "TOKNE"], 64, "TOKNE"),
        (["import", "--to", "vault://secret/app", "--no-env-file"], 78, "no .env"),
    ]
    for args, code, words in cases:
        result = run_envwrap(args, env=base_env, cwd=workdir)
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert_not_leaked(secret, *outputs(result))


def test_dry_run_creates_no_secret_and_no_file(
    workdir: Path, base_env: dict[str, str], aws: MotoServer
) -> None:
    secrets = write_dotenv(workdir)
    dry = run_envwrap(["import", "--to", "aws-sm://prod/dry", "--write", ".env.new",
                       "--dry-run"], env={**base_env, **aws.env}, cwd=workdir)
    assert dry.returncode == 0, dry.stderr
    assert "would write .env.new with references" in dry.stdout
    assert not (workdir / ".env.new").exists()
    assert aws.sm.list_secrets()["SecretList"] == []
    for value in secrets.values():
        assert_not_leaked(value, *outputs(dry))


def test_several_files_are_joined_in_order_and_expansions_are_warned_about(
    workdir: Path, base_env: dict[str, str], openbao: OpenBao
) -> None:
    first, second = canary("first"), canary("second")
    (workdir / "a.env").write_text(f"SHARED={first}\nHOST=db\n")
    (workdir / "b.env").write_text(f"SHARED={second}\nURL=http://${{HOST}}/${{SHARED}}\n")
    env = {**base_env, **openbao.env()}
    files = ["--env-file", "a.env", "--env-file", "b.env"]
    before = program_env(files, env, workdir)
    result = run_envwrap(["import", *files, "--to", "vault://secret/import/joined", "--exclude",
                          "URL,HOST", "--write", "joined.env"], env=env, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "URL stays as written but expands ${SHARED}: from now on" in result.stderr
    written = (workdir / "joined.env").read_text()
    assert written.startswith(f"# from {workdir}/a.env\nSHARED=vault://secret/import/joined#")
    assert f"# from {workdir}/b.env\n" in written
    after = program_env(["--env-file", "joined.env"], env, workdir)
    assert after["SHARED"] == before["SHARED"] == second and after["HOST"] == "db"
    assert after["URL"] == "http://db/vault://secret/import/joined#SHARED"  # as warned
    for value in (first, second):
        assert_not_leaked(value, *outputs(result), written)


def test_import_into_a_kv1_mount_and_refusals_of_other_engines(
    workdir: Path, base_env: dict[str, str], openbao: OpenBao
) -> None:
    secrets = write_dotenv(workdir)
    mount = f"kv1-{canary('m')[-6:]}"
    openbao.enable_kv1(mount)
    env = {**base_env, **openbao.env()}
    before = program_env([], env, workdir)
    to = f"vault://{mount}/app"
    first = run_envwrap(["import", "--to", to, "--write", ".env.kv1"], env=env, cwd=workdir)
    assert first.returncode == 0, first.stderr
    assert f"wrote 6 keys to {to}: " in first.stdout  # KV v1 has no versions
    again = run_envwrap(["import", "--to", to], env=env, cwd=workdir)
    assert again.returncode == 78 and "--force" in again.stderr
    forced = run_envwrap(["import", "--to", to, "--force"], env=env, cwd=workdir)
    assert forced.returncode == 0, forced.stderr
    after = program_env(["--env-file", ".env.kv1"], env, workdir)
    for name in ("PORT", "DB_PASSWORD", "API_KEY", "JWT_SECRET", "DB_URL"):
        assert after[name] == before[name], name
    not_kv = run_envwrap(["import", "--to", "vault://sys/envwrap-import"], env=env, cwd=workdir)
    assert not_kv.returncode == 78 and "KV secrets engine" in not_kv.stderr, not_kv.stderr
    no_mount = run_envwrap(["import", "--to", "vault://no-such-mount/app"], env=env, cwd=workdir)
    assert no_mount.returncode == 78 and "cannot be detected" in no_mount.stderr, no_mount.stderr
    for value in secrets.values():
        for result in (first, again, forced, not_kv, no_mount):
            assert_not_leaked(value, *outputs(result))
