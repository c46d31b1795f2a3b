"""The Node.js example on a real PostgreSQL, with dynamic credentials from OpenBao's
database engine, rotated by envwrap under load with no failed query.

``envwrap --watch --listen --ready 'log:ready on ' --on-change handoff --revoke-on-exit --
node server.js`` (examples/node-pg, the ``pg`` driver) with ``DATABASE_URL`` made
of inline ``vault://database/creds/ROLE#username`` / ``#password`` references. The
lease is short and cannot be renewed past its maximum TTL, so envwrap reads new
credentials (a new PostgreSQL user) on its own, hands the service over to a
generation that uses them, and revokes the old lease: OpenBao drops the old user.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from testsupport import ROOT, envwrap_command
from testsupport.fixtures_vault import OpenBao, free_port
from testsupport.helpers import LineCollector, assert_not_leaked, stop_process, wait_until
from testsupport.http_load import HttpLoad, reaped, summarize
from testsupport.postgres import Postgres, configure_database_engine, npm_ci

EXAMPLE = ROOT / "examples" / "node-pg"
#: the lease's TTL, which is also its maximum: envwrap reads new credentials at
#: two thirds of it, and the old lease would expire by itself at its end
TTL = 15


def items(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/items", timeout=5) as response:
        return dict(json.load(response))


def credentials_of(pid: int) -> tuple[str, str]:
    """(user, password) in the DATABASE_URL that process ``pid`` was started with."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    url = next(v.split(b"=", 1)[1] for v in environ if v.startswith(b"DATABASE_URL="))
    parts = urlsplit(url.decode())
    assert parts.username and parts.password
    return unquote(parts.username), unquote(parts.password)


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("Node.js is needed for examples/node-pg (apt-get install nodejs npm)")
    npm_ci(EXAMPLE)
    return found


def test_node_pg_rotates_its_database_user_under_load_with_no_failed_query(
    openbao: OpenBao, postgres: Postgres, base_env: dict[str, str], tmp_path: Path, node: str,
) -> None:
    creds = configure_database_engine(openbao.client, postgres, "node-pg", ttl=TTL)
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    url = (f"postgres://${{vault://{creds}#username}}:${{vault://{creds}#password}}"
           f"@{postgres.host}:{postgres.port}/{postgres.database}")
    started = time.monotonic()
    process = subprocess.Popen(
        [*envwrap_command(), "--no-env-file", "--watch", "--interval", "5s",
         "--listen", f"127.0.0.1:{port}", "--ready", "log:ready on ", "--on-change", "handoff",
         "--revoke-on-exit", "--audit-log", str(audit), "--log-level", "info",
         "--", node, "server.js"],
        cwd=EXAMPLE, env={**base_env, **openbao.env(), "DATABASE_URL": url},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    assert process.stdout is not None and process.stderr is not None
    out, err = LineCollector(process.stdout), LineCollector(process.stderr)
    try:
        first = wait_until(lambda: _answer(port), timeout=30)
        assert isinstance(first, dict)
        old_pid, old_user = int(first["pid"]), str(first["user"])
        old_credentials = credentials_of(old_pid)
        assert old_credentials[0] == old_user
        assert postgres.connected_users() == {old_user}

        # as fast as the clients go: the old generation has queries in flight when
        # it is asked to stop, and they must not meet revoked credentials
        with HttpLoad("127.0.0.1", port, "/items", connections=6, timeout=5,
                      max_seconds=60) as load:
            assert load.wait_answers(20, timeout=10)

            def handed_over() -> int | None:
                assert process.poll() is None, err.text()
                return next((s.pid for s in load.samples()
                             if s.pid not in {None, old_pid}), None)

            new_pid = wait_until(handed_over, timeout=TTL + 15)
            assert isinstance(new_pid, int)
            new_user, new_password = credentials_of(new_pid)
            wait_until(lambda: reaped(old_pid), timeout=15)
            # envwrap revoked the old lease: OpenBao dropped its user, well before
            # the lease would have expired by itself
            wait_until(lambda: old_user not in postgres.roles(), timeout=5)
            dropped_after = time.monotonic() - started
            assert load.wait_answers(50, timeout=10, since=time.monotonic())
        window = summarize(load.samples())
        assert window.failed == 0, window.outcomes
        assert window.pids == (old_pid, new_pid)
        assert dropped_after < TTL - 1, "the old user went only when its lease expired"

        after = items(port)
        assert after["pid"] == new_pid and after["user"] == new_user != old_user
        assert after["items"] == [{"id": 1, "name": "invoice"}, {"id": 2, "name": "reminder"},
                                  {"id": 3, "name": "receipt"}]
        assert postgres.connected_users() == {new_user}
        assert new_user in postgres.roles()
        records = [json.loads(line) for line in audit.read_text().splitlines() if line]
        events = [(r["event"], r.get("outcome"), r.get("pid")) for r in records]
        assert ("rotation", "applied", None) in events
        # the old lease is revoked once no generation uses it: after the old one exited
        revoked = events.index(("lease", "revoked", None))
        exited = next(i for i, e in enumerate(events) if e[0] == "child_exit" and e[2] == old_pid)
        assert exited < revoked, events

        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0  # the program's own code: it exits 0 on SIGTERM
        # --revoke-on-exit: the lease of the last generation goes with envwrap
        wait_until(lambda: new_user not in postgres.roles(), timeout=10)
    finally:
        _stop(process)
    stdout, stderr = out.join(), err.join()
    assert "Traceback" not in stderr
    assert "query failed" not in stdout
    for value in (*old_credentials, new_user, new_password):
        assert_not_leaked(value, stderr, stdout, audit.read_text())


def _answer(port: int) -> dict[str, object] | None:
    try:
        return items(port)
    except OSError:
        return None


def _stop(process: subprocess.Popen[str]) -> None:
    stop_process(process)
    # envwrap stops every generation it started; what is left of its session goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
