"""vault:// through the installed envwrap, as a real process, against a real OpenBao."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from testsupport.fixtures_vault import FakeServer, OpenBao, free_port
from testsupport.helpers import assert_not_leaked, canary, run_envwrap

DEBUG = ["--no-env-file", "--log-level", "debug"]


def child_environment(output: str) -> dict[str, str]:
    """The output of ``env -0`` as a mapping."""
    pairs = (item.partition("=") for item in output.split("\0") if item)
    return {name: value for name, _, value in pairs}


def resolve(env: dict[str, str], *values: str, args: tuple[str, ...] = ()) -> dict[str, str]:
    """Run ``envwrap -- env -0`` at debug level; the child's environment.

    Fails when envwrap fails or when any of ``values`` shows on its stderr.
    """
    result = run_envwrap([*DEBUG, *args, "--", "env", "-0"], env=env)
    for value in values:
        assert_not_leaked(value, result.stderr)
    assert result.returncode == 0, result.stderr
    return child_environment(result.stdout)


def fail(env: dict[str, str], *values: str, code: int, workdir: Path,
         args: tuple[str, ...] = ()) -> str:
    """Run envwrap expecting exit ``code`` before the child starts; its stderr."""
    marker = workdir / f"started-{secrets.token_hex(4)}"
    result = run_envwrap([*DEBUG, *args, "--", "touch", str(marker)], env=env)
    for value in values:
        assert_not_leaked(value, result.stderr, result.stdout)
    assert result.returncode == code, result.stderr
    assert not marker.exists(), "the child was started although a reference failed"
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture
def env(openbao: OpenBao, base_env: dict[str, str], workdir: Path) -> dict[str, str]:
    return {**base_env, **openbao.env()}


def name() -> str:
    return f"cli-{secrets.token_hex(4)}"


def test_keys_pointers_whole_json_inline_and_versions(openbao: OpenBao, env: dict[str, str]) -> None:
    path, old, password, token = name(), canary("old"), canary("pw"), canary("token")
    openbao.kv2_put(path, {"user": "app", "password": old, "nested": {"token": token}})
    document = {"user": "app", "password": password, "nested": {"token": token}}
    openbao.kv2_put(path, document)
    openbao.enable_kv1("kv1")
    legacy = canary("legacy")
    openbao.kv1_put(path, {"key": legacy}, mount="kv1")
    child = resolve({
        **env,
        "DB_PASSWORD": f"vault://secret/{path}#password",
        "DB_TOKEN": f"vault://secret/{path}#/nested/token",
        "DB_JSON": f"vault://secret/{path}",
        "API_PATH": f"ref+vault://secret/data/{path}#password",
        "OLD": f"vault://secret/{path}?version=-1#password",
        "FIRST": f"vault://secret/{path}?version=1#password",
        "LEGACY": f"vault://kv1/{path}#key",
        "DSN": f"postgres://${{vault://secret/{path}#user}}:${{vault://secret/{path}#password}}@db",
    }, old, password, token, legacy)
    assert child["DB_PASSWORD"] == child["API_PATH"] == password
    assert child["DB_TOKEN"] == token
    assert json.loads(child["DB_JSON"]) == document
    assert child["OLD"] == child["FIRST"] == old
    assert child["LEGACY"] == legacy
    assert child["DSN"] == f"postgres://app:{password}@db"


def test_check_shows_versions_without_values(openbao: OpenBao, env: dict[str, str]) -> None:
    path, value = name(), canary()
    openbao.kv2_put(path, {"k": canary()})
    openbao.kv2_put(path, {"k": value})
    result = run_envwrap(["check", *DEBUG], env={
        **env, "A": f"vault://secret/{path}#k", "B": f"vault://secret/{path}?version=-1#k"})
    assert result.returncode == 0, result.stderr
    assert_not_leaked(value, result.stdout, result.stderr)
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["A"][-1] == "2" and rows["B"][-1] == "1"


def test_missing_secret_key_and_version_exit_65(
    openbao: OpenBao, env: dict[str, str], workdir: Path
) -> None:
    path, value = name(), canary()
    openbao.kv2_put(path, {"password": value})
    for reference, words in (
        (f"vault://secret/{path}-absent#password", "no such secret"),
        (f"vault://secret/{path}#absent", "no key 'absent'"),
        (f"vault://secret/{path}?version=7#password", "no version 7"),
        (f"vault://secret/{path}?version=-1#password", "current version is 1"),
    ):
        stderr = fail({**env, "GOOD": f"vault://secret/{path}#password", "BAD": reference},
                      value, code=65, workdir=workdir)
        assert "BAD" in stderr and reference in stderr and words in stderr, stderr


def test_bad_token_exits_77(openbao: OpenBao, env: dict[str, str], workdir: Path) -> None:
    path, value = name(), canary()
    openbao.kv2_put(path, {"password": value})
    bad = canary("token")
    stderr = fail({**env, "VAULT_TOKEN": bad, "A": f"vault://secret/{path}#password"},
                  value, bad, code=77, workdir=workdir)
    assert "permission denied" in stderr and "A" in stderr


def test_unreachable_exits_69_after_start_timeout(env: dict[str, str], workdir: Path) -> None:
    down = {**env, "VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "A": "vault://secret/app#k"}
    started = time.monotonic()
    stderr = fail(down, code=69, workdir=workdir, args=("--start-timeout", "1s"))
    elapsed = time.monotonic() - started
    assert "unreachable after 1s" in stderr and "cannot connect to Vault" in stderr
    assert "retrying" in stderr  # it did retry before giving up
    assert 1 <= elapsed < 10


def test_from_imports_every_key(openbao: OpenBao, env: dict[str, str], workdir: Path) -> None:
    path, password, key = name(), canary("pw"), canary("key")
    openbao.kv2_put(path, {"DB_PASSWORD": password, "API_KEY": key, "PORT": 5432})
    child = resolve(env, password, key, args=("--from", f"vault://secret/{path}"))
    assert (child["DB_PASSWORD"], child["API_KEY"], child["PORT"]) == (password, key, "5432")
    openbao.kv2_put(f"{path}-bad", {"LD_PRELOAD": "/tmp/x.so", "OK": password})
    stderr = fail(env, password, code=65, workdir=workdir,
                  args=("--from", f"vault://secret/{path}-bad"))
    assert "LD_PRELOAD" in stderr


def test_credentials_are_not_passed_to_the_child(openbao: OpenBao, env: dict[str, str]) -> None:
    path, value = name(), canary()
    openbao.kv2_put(path, {"k": value})
    with_ref = {**env, "A": f"vault://secret/{path}#k"}
    child = resolve(with_ref, value, openbao.token)
    assert child["A"] == value
    assert "VAULT_TOKEN" not in child and child["VAULT_ADDR"] == openbao.addr
    kept = resolve(with_ref, value, openbao.token, args=("--pass-env", "VAULT_TOKEN"))
    assert kept["VAULT_TOKEN"] == openbao.token


def test_approle_login_and_its_credentials_stay_out_of_the_child(
    openbao: OpenBao, base_env: dict[str, str], workdir: Path
) -> None:
    path, value = name(), canary()
    openbao.kv2_put(path, {"k": value})
    openbao.policy("cli-read", 'path "secret/data/*" { capabilities = ["read"] }')
    role_id, secret_id = openbao.approle("cli", ["cli-read"])
    env = {**base_env, "VAULT_ADDR": openbao.addr, "VAULT_ROLE_ID": role_id,
           "VAULT_SECRET_ID": secret_id, "A": f"vault://secret/{path}#k"}
    child = resolve(env, value, secret_id)
    assert child["A"] == value
    assert not {"VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_TOKEN"} & set(child)
    wrong = canary("secret-id")
    stderr = fail({**env, "VAULT_SECRET_ID": wrong}, value, wrong, code=77, workdir=workdir)
    assert "log in with approle" in stderr


def test_namespace_and_settings_from_dotenv(
    openbao: OpenBao, base_env: dict[str, str], workdir: Path
) -> None:
    namespace, value = f"cli-ns-{secrets.token_hex(3)}", canary()
    openbao.client.write_data(f"sys/namespaces/{namespace}", data={})
    import hvac

    inside = hvac.Client(url=openbao.addr, token=openbao.token, namespace=namespace)
    inside.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    inside.secrets.kv.v2.create_or_update_secret(path="app", secret={"k": value}, mount_point="kv")
    # store settings may live in .env (the backend gets the merged environment)
    (workdir / ".env").write_text(
        f"VAULT_ADDR={openbao.addr}\nVAULT_TOKEN={openbao.token}\n"
        f"VAULT_NAMESPACE={namespace}\nA=vault://kv/app#k\n"
    )
    result = run_envwrap(["--log-level", "debug", "--", "env", "-0"], env=base_env)
    assert_not_leaked(value, result.stderr)
    assert result.returncode == 0, result.stderr
    assert child_environment(result.stdout)["A"] == value


def test_dynamic_secret(openbao: OpenBao, env: dict[str, str], rabbitmq_role: str,
                        fake_rabbitmq: FakeServer) -> None:
    result = run_envwrap([*DEBUG, "--", "env", "-0"], env={
        **env, "RMQ_USER": f"vault://{rabbitmq_role}#username",
        "RMQ_PASSWORD": f"vault://{rabbitmq_role}#password"})
    assert result.returncode == 0, result.stderr
    child = child_environment(result.stdout)
    assert_not_leaked(child["RMQ_PASSWORD"], result.stderr)
    # one read, so username and password belong together
    assert ("PUT", f"/api/users/{child['RMQ_USER']}") in fake_rabbitmq.requests


@pytest.fixture(scope="module")
def rabbitmq_role(openbao: OpenBao, fake_rabbitmq: FakeServer) -> str:
    openbao.enable("rabbitmq", "rabbitmq")
    openbao.client.write_data("rabbitmq/config/connection", data={
        "connection_uri": fake_rabbitmq.url, "username": "admin",
        "password": "admin", "verify_connection": False,
    })
    openbao.client.write_data("rabbitmq/roles/cli", data={"vhosts": '{"/": {"read": ".*"}}'})
    return "rabbitmq/creds/cli"
