"""The Node + PostgreSQL example (examples/node-pg) as users copy it: its command, its
.env, its lock file, and the service's own side -- it refuses credentials it cannot use
without printing them. The rotation itself is tests/rotation/test_node_pg.py.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest

from envwrap.config import parse_args
from envwrap.refs import parse_value
from envwrap.sources import load_dotenv_files
from testsupport import ROOT
from testsupport.helpers import assert_not_leaked, canary
from testsupport.postgres import Postgres, npm_ci

EXAMPLE = ROOT / "examples" / "node-pg"


def test_its_start_script_is_a_handoff_that_revokes_the_old_lease() -> None:
    script = json.loads((EXAMPLE / "package.json").read_text())["scripts"]["start"]
    words = shlex.split(script)  # as npm's sh runs it
    assert words[0] == "envwrap"
    # the parser the real command line goes through
    settings = parse_args(words[1:], {})
    assert settings.watch and settings.revoke_on_exit
    assert settings.on_change == "handoff"
    assert settings.ready == "log:ready on "  # server.js prints it once it listens
    assert settings.listen
    assert settings.argv == ["node", "server.js"]


def test_its_database_url_is_one_lease_of_the_database_engine() -> None:
    values = load_dotenv_files([str(EXAMPLE / "vault.env")], {"PGPORT": "6543"})
    template = parse_value(values["DATABASE_URL"])
    assert template is not None
    references = template.references
    assert [r.key for r in references] == ["username", "password"]
    assert {str(r.locator) for r in references} == {"vault://database/creds/app"}
    assert template.parts[0] == "postgres://"
    assert template.parts[-1] == "@127.0.0.1:6543/app"


def test_its_lock_file_pins_what_package_json_asks_for() -> None:
    package = json.loads((EXAMPLE / "package.json").read_text())
    lock = json.loads((EXAMPLE / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"] == package["dependencies"]
    assert "node_modules/pg" in lock["packages"]


def test_the_service_refuses_credentials_it_cannot_use_without_printing_them(
        postgres: Postgres) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed for examples/node-pg (apt-get install nodejs npm)")
    npm_ci(EXAMPLE)
    password = canary("pg-password")
    url = f"postgres://nobody-here:{password}@{postgres.host}:{postgres.port}/app"
    result = subprocess.run([node, "server.js"], cwd=EXAMPLE, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "DATABASE_URL": url}, timeout=30,
                            check=False)
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "28P01" in result.stderr  # invalid_password: the reason, by its code
    assert_not_leaked(password, result.stdout, result.stderr)
