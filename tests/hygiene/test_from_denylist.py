"""``--from`` refuses every name that changes how a program loads, runs or trusts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testsupport.helpers import canary, run_envwrap

REFUSED = [
    "PYTHONWARNINGS", "PYTHONUSERBASE", "BROWSER", "OPENSSL_CONF", "GLIBC_TUNABLES", "PERL5DB",
    "PERL5OPT", "GIT_SSH_COMMAND", "GIT_CONFIG_GLOBAL", "HTTPS_PROXY", "http_proxy", "NO_PROXY",
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "NODE_TLS_REJECT_UNAUTHORIZED",
    "NODE_OPTIONS", "LD_PRELOAD", "RUBYOPT", "PIP_INDEX_URL",
]


@pytest.mark.parametrize("name", REFUSED)
def test_a_loader_proxy_or_trust_name_is_refused_naming_the_key(
    name: str, tmp_path: Path, base_env: dict[str, str]
) -> None:
    value = canary("v")
    marker = tmp_path / "ran"
    (tmp_path / "app.json").write_text(json.dumps({name: value, "NODE_ENV": "production"}))
    result = run_envwrap(["--no-env-file", "--from", f"ref+file://{tmp_path}/app.json", "--",
                          "touch", str(marker)], env=base_env, cwd=tmp_path)
    assert result.returncode == 65, result.stderr
    assert name in result.stderr and "--allow-name" in result.stderr
    assert value not in result.stderr + result.stdout
    assert not marker.exists()


def test_the_red_team_chain_does_not_reach_a_python_child(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    """PYTHONWARNINGS naming a module that imports webbrowser, and BROWSER naming a command."""
    marker = tmp_path / "pwned"
    (tmp_path / "app.json").write_text(json.dumps({
        "PYTHONWARNINGS": "all:0:antigravity.x:0:0", "BROWSER": f"touch {marker}",
    }))
    result = run_envwrap(["--no-env-file", "--from", f"ref+file://{tmp_path}/app.json", "--",
                          "python3", "-c", "pass"], env=base_env, cwd=tmp_path)
    assert result.returncode == 65
    assert not marker.exists()


def test_ordinary_application_keys_pass(tmp_path: Path, base_env: dict[str, str]) -> None:
    keys = {"NODE_ENV": "production", "PORT": "3001", "DATABASE_URL": "postgres://db/app",
            "JWT_SECRET": canary("jwt"), "AT_API_KEY": canary("at"), "REDIS_URL": "redis://r"}
    (tmp_path / "app.json").write_text(json.dumps(keys))
    result = run_envwrap(["--no-env-file", "--from", f"ref+file://{tmp_path}/app.json", "--",
                          "sh", "-c", 'echo "$NODE_ENV $PORT"'], env=base_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "production 3001"


def test_allow_name_lets_one_through(tmp_path: Path, base_env: dict[str, str]) -> None:
    (tmp_path / "app.json").write_text(json.dumps({"HTTPS_PROXY": "http://proxy:3128"}))
    result = run_envwrap(["--no-env-file", "--from", f"ref+file://{tmp_path}/app.json",
                          "--allow-name", "HTTPS_PROXY", "--", "sh", "-c", 'echo "$HTTPS_PROXY"'],
                         env=base_env, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "http://proxy:3128"
