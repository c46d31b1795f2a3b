"""The launcher end to end: the installed ``envwrap`` run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from dotenv import dotenv_values

from testsupport import envwrap_command
from testsupport.helpers import assert_not_leaked, canary, run_envwrap
from testsupport.unprivileged import NOBODY, as_nobody, reachable

PRINT_ENV = ["python3", "-c", "import json,os; print(json.dumps(dict(os.environ)))"]


def child_env(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    env: dict[str, str] = json.loads(result.stdout)
    return env


@pytest.fixture
def secrets_dir(workdir: Path) -> Path:
    folder = workdir / "secrets"
    folder.mkdir()
    return folder


def test_exec_keeps_pid_arguments_stdin_and_exit_code(workdir: Path, base_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [*envwrap_command(), "--", "sh", "-c", 'echo "$$ $1 $2"; cat; exit 42', "sh", "a b", "c"],
        env=base_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    out, _ = proc.communicate("from stdin\n", timeout=30)
    assert proc.returncode == 42
    assert out == f"{proc.pid} a b c\nfrom stdin\n"


def test_command_not_found_and_not_executable(workdir: Path, base_env: dict[str, str]) -> None:
    missing = run_envwrap(["--", "no-such-command-xyz"], env=base_env)
    assert missing.returncode == 127
    assert "no-such-command-xyz" in missing.stderr and "Traceback" not in missing.stderr
    script = workdir / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    denied = run_envwrap(["--", str(script)], env=base_env)
    assert denied.returncode == 126
    without_command = run_envwrap([], env=base_env)
    assert without_command.returncode == 64


def test_dotenv_precedence_and_files(workdir: Path, base_env: dict[str, str]) -> None:
    (workdir / ".env").write_text("PORT=3001\nNODE_ENV=development\nSHARED=dotenv\n")
    (workdir / "a.env").write_text("A=1\nSHARED=a\n")
    (workdir / "b.env").write_text("SHARED=b\nQUOTED='x  y'\nEXPANDED=${FROM_PROCESS}-z\n")
    env = {**base_env, "SHARED": "process", "FROM_PROCESS": "p"}
    default = child_env(run_envwrap(["--", *PRINT_ENV], env=env))
    assert default["PORT"] == "3001" and default["SHARED"] == "process"
    overridden = child_env(run_envwrap(["--override", "--", *PRINT_ENV], env=env))
    assert overridden["SHARED"] == "dotenv"
    files = child_env(
        run_envwrap(["--env-file", "a.env", "--env-file", "b.env", "--override", "--", *PRINT_ENV],
                    env=env)
    )
    assert files["SHARED"] == "b" and "PORT" not in files
    assert files["QUOTED"] == "x  y" and files["EXPANDED"] == "p-z"
    none = child_env(run_envwrap(["--no-env-file", "--", *PRINT_ENV], env=base_env))
    assert "PORT" not in none
    from_env = child_env(run_envwrap(["--", *PRINT_ENV], env={**base_env, "ENVWRAP_ENV_FILE": "a.env"}))
    assert from_env["A"] == "1" and "PORT" not in from_env and "ENVWRAP_ENV_FILE" not in from_env


def test_bad_dotenv_line_names_file_and_line_not_content(workdir: Path, base_env: dict[str, str]) -> None:
    secret = canary()
    (workdir / ".env").write_text(f"OK=1\nBROKEN='{secret}\n")
    result = run_envwrap(["--", "true"], env=base_env)
    assert result.returncode == 78
    assert ".env" in result.stderr and "line 2" in result.stderr
    assert_not_leaked(secret, result.stderr, result.stdout)
    missing = run_envwrap(["--env-file", "nope.env", "--", "true"], env=base_env)
    assert missing.returncode == 78 and "nope.env" in missing.stderr


def test_file_references_whole_key_pointer_and_inline(
    secrets_dir: Path, workdir: Path, base_env: dict[str, str]
) -> None:
    password, api_key = canary("pw"), canary("key")
    (secrets_dir / "password").write_text(password + "\n")
    (secrets_dir / "db.json").write_text(json.dumps({"user": "app", "password": password,
                                                      "tls": {"port": 5432}}))
    (secrets_dir / "at.json").write_text(json.dumps({"api_key": api_key}))
    (workdir / ".env").write_text(
        f"DB_PASSWORD=ref+file://{secrets_dir}/password\n"
        f"DATABASE_URL=postgresql://${{ref+file://{secrets_dir}/db.json#user}}:"
        f"${{ref+file://{secrets_dir}/db.json#password}}@localhost:5432/workflows\n"
        f"DB_PORT=ref+file://{secrets_dir}/db.json#/tls/port\n"
        f"DB_JSON=ref+file://{secrets_dir}/db.json\n"
        "PLAIN_URL=file:///etc/hosts\n"
    )
    env = {**base_env, "AT_API_KEY": f"ref+file://{secrets_dir}/at.json#api_key"}
    result = run_envwrap(["--log-level", "debug", "--", *PRINT_ENV], env=env)
    got = child_env(result)
    assert got["DB_PASSWORD"] == password
    assert got["DATABASE_URL"] == f"postgresql://app:{password}@localhost:5432/workflows"
    assert got["DB_PORT"] == "5432"
    assert json.loads(got["DB_JSON"])["password"] == password
    assert got["AT_API_KEY"] == api_key
    assert got["PLAIN_URL"] == "file:///etc/hosts"
    assert_not_leaked(password, result.stderr)
    assert_not_leaked(api_key, result.stderr)
    assert "resolved" in result.stderr  # debug output exists, without values


def test_resolved_values_are_not_resolved_again(secrets_dir: Path, base_env: dict[str, str]) -> None:
    (secrets_dir / "inner").write_text("never-read")
    (secrets_dir / "outer").write_text(f"ref+file://{secrets_dir}/inner")
    env = {**base_env, "X": f"ref+file://{secrets_dir}/outer"}
    assert child_env(run_envwrap(["--", *PRINT_ENV], env=env))["X"] == f"ref+file://{secrets_dir}/inner"


def test_reference_errors(secrets_dir: Path, base_env: dict[str, str]) -> None:
    secret = canary()
    (secrets_dir / "db.json").write_text(json.dumps({"password": secret}))
    ref = f"ref+file://{secrets_dir}/db.json#nope"
    missing_key = run_envwrap(["--log-level", "debug", "--", "true"], env={**base_env, "DB_PASSWORD": ref})
    assert missing_key.returncode == 65
    assert "DB_PASSWORD" in missing_key.stderr and ref in missing_key.stderr
    missing_file = run_envwrap(["--", "true"], env={**base_env, "X": "ref+file:///no/such/file"})
    assert missing_file.returncode == 65 and "X" in missing_file.stderr
    malformed = run_envwrap(["--", "true"], env={**base_env, "Y": "vault://secret/x?version=abc"})
    assert malformed.returncode == 64 and "Y" in malformed.stderr
    plugin = run_envwrap(["--", "true"], env={**base_env, "Z": "ref+gcp://projects/p/secrets/s"})
    assert plugin.returncode == 78 and "gcp" in plugin.stderr and "entry-point" in plugin.stderr
    debug = run_envwrap(["--debug", "--", "true"], env={**base_env, "DB_PASSWORD": ref})
    assert debug.returncode == 65 and "Traceback" in debug.stderr
    for result in (missing_key, missing_file, malformed, plugin, debug):
        assert_not_leaked(secret, result.stderr, result.stdout)
        assert "Traceback" not in result.stderr or result is debug


def test_check_prints_a_table_without_values(secrets_dir: Path, base_env: dict[str, str]) -> None:
    secret = canary()
    (secrets_dir / "db.json").write_text(json.dumps({"password": secret, "user": "u"}))
    env = {**base_env, "DB_PASSWORD": f"ref+file://{secrets_dir}/db.json#password",
           "DB_USER": f"ref+file://{secrets_dir}/db.json#user"}
    result = run_envwrap(["check", "--log-level", "debug"], env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["VARIABLE", "STORE", "PATH", "KEY", "VERSION"]
    assert any(line.split()[:4] == ["DB_PASSWORD", "file", f"{secrets_dir}/db.json", "password"]
               for line in lines)
    assert_not_leaked(secret, result.stdout, result.stderr)


def test_export_formats_round_trip(secrets_dir: Path, workdir: Path, base_env: dict[str, str]) -> None:
    tricky = canary() + " it's \"quoted\" $HOME ${PORT} \\ back\nline2"
    quoted = canary() + " it's \"quoted\" \\ back\nline2 # not a comment"
    (secrets_dir / "tricky").write_text(tricky + "\n")
    (secrets_dir / "quoted").write_text(quoted + "\n")
    (workdir / ".env").write_text(f"PORT=3001\nTRICKY=ref+file://{secrets_dir}/tricky\n")
    as_json = run_envwrap(["export", "--format", "json"], env=base_env)
    assert json.loads(as_json.stdout) == {"PORT": "3001", "TRICKY": tricky}
    as_shell = run_envwrap(["export", "--format", "shell"], env=base_env)
    shell = subprocess.run(["sh", "-c", as_shell.stdout + 'printf %s "$TRICKY"'],
                           capture_output=True, text=True, check=True)
    assert shell.stdout == tricky
    # dotenv: what a POSIX shell and python-dotenv (interpolating) both read back exactly
    (workdir / ".env").write_text(f"PORT=3001\nQUOTED=ref+file://{secrets_dir}/quoted\n")
    as_dotenv = run_envwrap(["export"], env=base_env)
    (workdir / "exported.env").write_text(as_dotenv.stdout)
    assert dotenv_values(workdir / "exported.env") == {"PORT": "3001", "QUOTED": quoted}
    sourced = subprocess.run(["sh", "-c", '. ./exported.env; printf %s "$QUOTED"'], cwd=workdir,
                             capture_output=True, text=True, check=True)
    assert sourced.stdout == quoted
    # ... and a value no dotenv text can carry to both (a quote and a "$") is refused by name
    (workdir / ".env").write_text(f"TRICKY=ref+file://{secrets_dir}/tricky\n")
    refused = run_envwrap(["export"], env=base_env)
    assert refused.returncode == 65 and "TRICKY" in refused.stderr
    for result in (as_json, as_dotenv, as_shell):
        assert result.returncode == 0
    for result in (as_json, as_dotenv, as_shell, refused):
        assert_not_leaked(tricky, result.stderr)
        assert_not_leaked(quoted, result.stderr)


def test_from_imports_keys_and_refuses_dangerous_names(secrets_dir: Path, base_env: dict[str, str]) -> None:
    secret = canary()
    (secrets_dir / "app.json").write_text(json.dumps({"JWT_SECRET": secret, "PORT": 8080}))
    ref = f"ref+file://{secrets_dir}/app.json"
    got = child_env(run_envwrap(["--from", ref, "--", *PRINT_ENV], env={**base_env, "PORT": "1"}))
    assert got["JWT_SECRET"] == secret and got["PORT"] == "1"
    (secrets_dir / "evil.json").write_text(json.dumps({"LD_PRELOAD": secret, "A": "b"}))
    evil = f"ref+file://{secrets_dir}/evil.json"
    refused = run_envwrap(["--from", evil, "--", "true"], env=base_env)
    assert refused.returncode == 65 and "LD_PRELOAD" in refused.stderr
    allowed = child_env(run_envwrap(["--from", evil, "--allow-name", "LD_PRELOAD", "--",
                                     "python3", "-c", "import json,os;print(json.dumps(dict(os.environ)))"],
                                    env=base_env))
    assert allowed["A"] == "b"
    (secrets_dir / "badname.json").write_text(json.dumps({"1BAD": secret}))
    bad = run_envwrap(["--from", f"ref+file://{secrets_dir}/badname.json", "--", "true"], env=base_env)
    assert bad.returncode == 65 and "1BAD" in bad.stderr
    (secrets_dir / "text").write_text(secret)
    plain = run_envwrap(["--from", f"ref+file://{secrets_dir}/text", "--", "true"], env=base_env)
    assert plain.returncode == 65
    for result in (refused, bad, plain):
        assert_not_leaked(secret, result.stderr, result.stdout)


def test_credentials_and_settings_are_scrubbed(workdir: Path, base_env: dict[str, str]) -> None:
    env = {**base_env, "VAULT_TOKEN": "t", "VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s",
           "ENVWRAP_LOG_LEVEL": "info", "VAULT_ADDR": "http://127.0.0.1:1"}
    got = child_env(run_envwrap(["--", *PRINT_ENV], env=env))
    assert not {"VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "ENVWRAP_LOG_LEVEL"} & set(got)
    assert got["VAULT_ADDR"] == "http://127.0.0.1:1"
    kept = child_env(run_envwrap(["--pass-env", "VAULT_TOKEN", "--", *PRINT_ENV], env=env))
    assert kept["VAULT_TOKEN"] == "t" and "VAULT_ROLE_ID" not in kept


def test_values_execve_would_refuse(secrets_dir: Path, base_env: dict[str, str]) -> None:
    secret = canary()
    (secrets_dir / "nul").write_bytes(secret.encode() + b"\x00tail")
    nul = run_envwrap(["--", "true"], env={**base_env, "WITH_NUL": f"ref+file://{secrets_dir}/nul"})
    assert nul.returncode == 65 and "WITH_NUL" in nul.stderr and "NUL" in nul.stderr
    (secrets_dir / "big").write_text(secret + "x" * (200 * 1024))
    big = run_envwrap(["--", "true"], env={**base_env, "BIG": f"ref+file://{secrets_dir}/big"})
    assert big.returncode == 65 and "BIG" in big.stderr
    for result in (nul, big):
        assert_not_leaked(secret, result.stderr)


def test_example_file_check(workdir: Path, base_env: dict[str, str]) -> None:
    (workdir / ".env").write_text("AT_USERNAME=sandbox\nPORT=3001\n")
    (workdir / ".env.example").write_text("AT_USERNAME=your_username\nAT_API_KEY=your_api_key\nPORT=\n")
    failing = run_envwrap(["check", "--example", ".env.example"], env=base_env)
    assert failing.returncode == 78 and "AT_API_KEY" in failing.stderr
    assert "AT_USERNAME" not in failing.stderr.split("not set:")[-1]
    run = run_envwrap(["--require-example", ".env.example", "--", "true"], env=base_env)
    assert run.returncode == 78
    passing = run_envwrap(["--require-example", ".env.example", "--", "true"],
                          env={**base_env, "AT_API_KEY": "k"})
    assert passing.returncode == 0, passing.stderr


def test_child_gets_default_signals_and_only_std_descriptors(workdir: Path, base_env: dict[str, str]) -> None:
    started = time.monotonic()
    piped = run_envwrap(["--", "sh", "-c", "yes | head -1"], env=base_env, timeout=20)
    assert piped.returncode == 0 and piped.stdout == "y\n"
    assert time.monotonic() - started < 15
    read_fd, write_fd = os.pipe()
    os.set_inheritable(read_fd, True)
    try:
        result = subprocess.run(
            [*envwrap_command(), "--", "sh", "-c",
             "grep -E '^Sig(Ign|Blk)' /proc/self/status; ls /proc/self/fd"],
            env=base_env, capture_output=True, text=True, pass_fds=(read_fd,), check=True,
        )
    finally:
        os.close(read_fd)
        os.close(write_fd)
    fields = dict(line.split(":\t") for line in result.stdout.splitlines() if line.startswith("Sig"))
    sigpipe_bit = 1 << (13 - 1)
    assert int(fields["SigIgn"], 16) & sigpipe_bit == 0
    assert int(fields["SigBlk"], 16) == 0
    fds = sorted(int(n) for n in result.stdout.split() if n.isdigit())
    # `ls` itself opens one descriptor to read /proc/self/fd
    assert read_fd not in fds and [fd for fd in fds if fd > 3] == []


def test_options_from_environment_and_bad_values(workdir: Path, base_env: dict[str, str]) -> None:
    bad = run_envwrap(["--", "true"], env={**base_env, "ENVWRAP_START_TIMEOUT": "soon"})
    assert bad.returncode == 78 and "ENVWRAP_START_TIMEOUT" in bad.stderr
    bad_signal = run_envwrap(["--kill-signal", "SIGNOPE", "--init", "--", "true"], env=base_env)
    assert bad_signal.returncode == 78 and "--kill-signal" in bad_signal.stderr
    unknown = run_envwrap(["--frobnicate", "--", "true"], env=base_env)
    assert unknown.returncode == 64
    wrong_command = run_envwrap(["check", "--watch"], env=base_env)
    assert wrong_command.returncode == 64
    help_text = run_envwrap(["--help"], env=base_env)
    assert help_text.returncode == 0 and "ENVWRAP_ENV_FILE" in help_text.stdout


def test_envwrap_holding_secrets_is_not_dumpable_but_its_child_is(base_env: dict[str, str]) -> None:
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)
        (folder / "pw").write_text(canary())
        (folder / "pw").chmod(0o644)
        env = {**base_env, "PW": f"ref+file://{folder}/pw"}
        # the child reports who owns envwrap's /proc/PID/mem and its own: a process
        # that is not dumpable has its /proc files owned by root (proc(5))
        script = "import os; print(os.stat(f'/proc/{os.getppid()}/mem').st_uid, os.stat('/proc/self/mem').st_uid)"
        with reachable(folder):  # as root, run as nobody: root may read any /proc file
            result = subprocess.run(
                [*as_nobody(), *envwrap_command(), "--init", "--", "python3", "-c", script],
                env=env, capture_output=True, text=True, timeout=60, check=False, cwd=folder,
            )
        assert result.returncode == 0, result.stderr
        parent_owner, child_owner = map(int, result.stdout.split())
        assert parent_owner == 0
        assert child_owner == (NOBODY if os.geteuid() == 0 else os.geteuid())
    finally:
        shutil.rmtree(folder)
