"""The envwrap demo (run through scripts/demo.sh). Prints fingerprints, never secrets.

1. An OpenBao dev server holds the team's secrets; ``envwrap check`` shows where
   each variable comes from.
2. ``envwrap --watch``: a rotation restarts the Node.js service with the new
   value -- under steady HTTP load, showing what a plain restart costs.
3. ``envwrap --watch --listen --ready notify --on-change handoff``: several
   rotations under the same load, each with 0 failed requests and a new PID.
4. A rotation delivers a password the service cannot use: the new generation
   exits, envwrap rolls back and the old one keeps answering; a good value
   written after it is applied.
5. ``examples/node-pg`` on a real PostgreSQL with dynamic credentials from
   OpenBao's database engine: each lease nears its end under load, envwrap hands
   the service over to a generation with a new PostgreSQL user (0 failed queries)
   and revokes the old lease, so the old user is dropped.

Every process it starts is stopped at the end, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testsupport.http_load import HttpLoad, reaped, summarize  # noqa: E402
from testsupport.postgres import (  # noqa: E402
    Postgres,
    configure_database_engine,
    npm_ci,
    start_postgres,
)

BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "node-server"
#: the example service waits this long before it listens, like a real one
#: loading and connecting to its database
STARTUP_DELAY_MS = "400"
#: steady load: requests per second over LOAD_CONNECTIONS clients
LOAD_RATE = 200.0
LOAD_CONNECTIONS = 4
HANDOFF_ROTATIONS = 3
PG_EXAMPLE = ROOT / "examples" / "node-pg"
#: the database engine's lease: envwrap reads new credentials at two thirds of it
PG_LEASE_TTL = 9
PG_ROTATIONS = 2
PG_LOAD_RATE = 100.0
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            result = probe()
            if result:
                return result
        time.sleep(0.05)
    raise SystemExit(f"demo: timed out waiting for {what}")


def status(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
        return dict(json.load(response))


class Vault:
    def __init__(self, port: int, token: str, home: str) -> None:
        self.env = {**os.environ, "VAULT_ADDR": f"http://127.0.0.1:{port}",
                    "VAULT_TOKEN": token, "HOME": home}
        #: every secret value written, to check that none shows up in any output
        self.values: list[str] = []

    def put(self, path: str, *pairs: str) -> None:
        self.values.extend(pair.split("=", 1)[1] for pair in pairs)
        subprocess.run([str(BIN / "bao"), "kv", "put", path, *pairs], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)

    def rotate_db_password(self, password: str | None = None) -> None:
        self.put("secret/workflows/db", "user=workflows",
                 f"password={password or 'pw-' + secrets.token_hex(8)}")


class Service:
    """envwrap running an example service; its output echoed, indented, and kept."""

    def __init__(self, options: list[str], env: dict[str, str], node: str,
                 example: Path = EXAMPLE) -> None:
        argv = [str(BIN / "envwrap"), "--env-file", "vault.env", *options, "--", node,
                "server.js"]
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            argv, cwd=example, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        assert self.process.stdout is not None
        self._echo = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._echo.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)
            print(f"    | {line}", end="", flush=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        # envwrap stops every generation it started; anything left in the
        # session (it should be nothing) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self._echo.join(5)


@contextlib.contextmanager
def service(options: list[str], env: dict[str, str], node: str,
            vault: Vault, example: Path = EXAMPLE) -> Iterator[Service]:
    print(f"running in examples/{example.name}: envwrap --env-file vault.env "
          f"{' '.join(options)} -- node server.js", flush=True)
    running = Service(options, env, node, example)
    try:
        yield running
    finally:
        running.stop()
    output = "".join(running.lines)
    # user names such as "workflows" are not secret; the generated values are
    if any(value in output for value in vault.values if len(value) > 12):
        raise SystemExit("demo: a secret value appeared in the output")


def new_generation(load: HttpLoad, since: float, old: int) -> int | None:
    """The PID of the first answer, to a request started after ``since``, not from ``old``."""
    return next((s.pid for s in load.samples()
                 if s.started >= since and s.pid is not None and s.pid != old), None)


def audit_records(path: Path, event: str) -> list[dict[str, object]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == event]


def part_restart(vault: Vault, env: dict[str, str], node: str, port: int) -> None:
    step("a rotation with envwrap --watch: the service restarts with the new value")
    with service(["--watch", "--interval", "1s", "--log-level", "info"], env, node, vault):
        before = wait_for("the service", lambda: status(port))
        print(f"service answers: {json.dumps(before)}")
        with HttpLoad("127.0.0.1", port, connections=LOAD_CONNECTIONS, rate=LOAD_RATE,
                      timeout=5, max_seconds=30) as load:
            load.wait_answers(20, timeout=10)
            step(f"rotating the database password in Vault, under {LOAD_RATE:.0f} requests/s")
            rotated_at = time.monotonic()
            vault.rotate_db_password()

            def changed() -> dict[str, object] | None:
                now = status(port)
                return now if now["databaseUrl"] != before["databaseUrl"] else None

            after = wait_for("the restarted service", changed)
            took = time.monotonic() - rotated_at
            load.wait_answers(20, timeout=10, since=time.monotonic())
        window = summarize(load.samples(), rotated_at, time.monotonic())
        print(f"service answers: {json.dumps(after)}")
        print(f"\nDATABASE_URL fingerprint {before['databaseUrl']} -> {after['databaseUrl']}, "
              f"new pid {after['pid']} (was {before['pid']}), {took:.1f}s after the write.")
        if after["jwtSecret"] != before["jwtSecret"] or after["atApiKey"] != before["atApiKey"]:
            raise SystemExit("demo: an unrotated secret changed")
        print(f"A plain restart stops the old process before the new one listens: "
              f"{window.failed} of {window.requests} requests failed "
              f"({', '.join(f'{n} {k}' for k, n in window.outcomes.items() if k != 'ok')}), "
              f"{window.longest_gap * 1000:.0f} ms without an answer.")


def part_handoff(vault: Vault, env: dict[str, str], node: str, port: int, folder: Path) -> None:
    audit = folder / "audit.jsonl"
    options = ["--watch", "--interval", "1s", "--listen", f"127.0.0.1:{port}",
               "--ready", "notify", "--on-change", "handoff", "--audit-log", str(audit),
               "--log-level", "info"]
    step("the same service with a socket envwrap holds, and a handoff on each rotation")
    print("envwrap binds the port and passes it to every generation as fd 3 (LISTEN_FDS);\n"
          "a rotation starts the new generation, waits for its READY=1, then stops the old one.")
    with service(options, env, node, vault) as wrapped:
        first = wait_for("the service", lambda: status(port))
        with HttpLoad("127.0.0.1", port, connections=LOAD_CONNECTIONS, rate=LOAD_RATE,
                      timeout=5, max_seconds=45) as load:
            pid = handoffs(vault, load, int(str(first["pid"])))
            rollback(vault, load, pid, audit)
            if wrapped.process.poll() is not None:
                raise SystemExit("demo: envwrap exited")
    total = summarize(load.samples())
    print(f"\nhandoff mode, whole run: {total.requests} requests, {total.failed} failed, "
          f"p99 latency {total.p99 * 1000:.1f} ms")


def handoffs(vault: Vault, load: HttpLoad, pid: int) -> int:
    """Rotations under load, each checked for 0 failed requests; the last PID."""
    load.wait_answers(20, timeout=10)
    failed_total = 0
    for rotation in range(1, HANDOFF_ROTATIONS + 1):
        step(f"handoff rotation {rotation}/{HANDOFF_ROTATIONS} under {LOAD_RATE:.0f} "
             "requests/s")
        rotated_at = time.monotonic()
        vault.rotate_db_password()
        old = pid
        new = wait_for("the new generation",
                       lambda: new_generation(load, rotated_at, old))  # noqa: B023
        wait_for("the old generation to finish", lambda: reaped(old))  # noqa: B023
        load.wait_answers(20, timeout=10, since=time.monotonic())
        window = summarize(load.samples(), rotated_at, time.monotonic())
        failed_total += window.failed
        pid = new
        print(f"rotation {rotation}: pid {old} -> {new}, {window.failed} of "
              f"{window.requests} requests failed, longest gap without an answer "
              f"{window.longest_gap * 1000:.0f} ms")
    if failed_total:
        raise SystemExit(f"demo: {failed_total} requests failed during handoffs")
    return pid


def rollback(vault: Vault, load: HttpLoad, pid: int, audit: Path) -> None:
    """A value the service rejects is rolled back; a good one written after it is applied."""
    step("a rotation delivers a password the service cannot use ('/' breaks DATABASE_URL)")
    rejected_at = time.monotonic()
    vault.rotate_db_password(f"pw-{secrets.token_hex(4)}/{secrets.token_hex(4)}")
    record = wait_for("the rollback", lambda: next(
        (r for r in audit_records(audit, "rotation") if r.get("outcome") == "rolled_back"),
        None), timeout=30)
    load.wait_answers(20, timeout=10, since=time.monotonic())
    window = summarize(load.samples(), rejected_at, time.monotonic())
    print(f"audit: {json.dumps(record)}")
    print(f"rolled back: pid {pid} kept answering ({', '.join(map(str, window.pids))} "
          f"answered), {window.failed} of {window.requests} requests failed")
    if window.failed or window.pids != (pid,) or reaped(pid):
        raise SystemExit("demo: the old generation did not keep serving through the rollback")

    step("a good password written after it is applied at once")
    fixed_at = time.monotonic()
    vault.rotate_db_password()
    old = pid
    new = wait_for("the new generation", lambda: new_generation(load, fixed_at, old),
                   timeout=30)
    wait_for("the old generation to finish", lambda: reaped(old))
    load.wait_answers(20, timeout=10, since=time.monotonic())
    window = summarize(load.samples(), fixed_at, time.monotonic())
    print(f"applied: pid {old} -> {new}, {window.failed} of {window.requests} requests failed")
    if window.failed:
        raise SystemExit("demo: requests failed while applying the corrected password")


def part_postgres(vault: Vault, env: dict[str, str], node: str, port: int,
                  folder: Path) -> None:
    step("a Node.js service on a real PostgreSQL, with credentials that expire")
    print("examples/node-pg reads DATABASE_URL with the `pg` driver. OpenBao's database\n"
          "engine creates a PostgreSQL user per lease; envwrap renews the lease until its\n"
          "maximum TTL is near, reads new credentials, hands the service over to a generation\n"
          "that uses them, and revokes the old lease (OpenBao drops the old user).")
    npm_ci(PG_EXAMPLE)
    database = start_postgres()
    try:
        print(f"PostgreSQL {database.bindir.parent.name} on {database.host}:{database.port} "
              "(a throw-away cluster in a temporary folder)")
        import hvac

        client = hvac.Client(url=vault.env["VAULT_ADDR"], token=vault.env["VAULT_TOKEN"])
        creds = configure_database_engine(client, database, "app", ttl=PG_LEASE_TTL)
        print(f"OpenBao: database/ engine, role app, leases of {PG_LEASE_TTL}s "
              f"(read: {creds})")
        print((PG_EXAMPLE / "vault.env").read_text().strip().splitlines()[-1])
        audit = folder / "audit-pg.jsonl"
        options = ["--watch", "--listen", f"127.0.0.1:{port}", "--ready", "log:ready on ",
                   "--on-change", "handoff", "--revoke-on-exit", "--audit-log", str(audit),
                   "--log-level", "info"]
        pg_env = {**env, "PGHOST": database.host, "PGPORT": str(database.port)}
        with service(options, pg_env, node, vault, PG_EXAMPLE) as wrapped:
            first = wait_for("the service", lambda: items(port), timeout=30)
            print(f"GET /items: {json.dumps(first)}")
            with HttpLoad("127.0.0.1", port, "/items", connections=LOAD_CONNECTIONS,
                          rate=PG_LOAD_RATE, timeout=5, max_seconds=60) as load:
                load.wait_answers(20, timeout=10)
                pid, user = int(str(first["pid"])), str(first["user"])
                users = [user]
                for rotation in range(1, PG_ROTATIONS + 1):
                    pid, user = database_rotation(database, load, rotation, pid, user)
                    users.append(user)
                if wrapped.process.poll() is not None:
                    raise SystemExit("demo: envwrap exited")
        # envwrap treats the user names as secrets too: none is in its output
        if any(name in "".join(wrapped.lines) for name in users):
            raise SystemExit("demo: a PostgreSQL user name appeared in envwrap's output")
        total = summarize(load.samples())
        revoked = len([r for r in audit_records(audit, "lease") if r.get("outcome") == "revoked"])
        print(f"\nNode + PostgreSQL, whole run: {total.requests} queries, {total.failed} failed, "
              f"p99 latency {total.p99 * 1000:.1f} ms; {revoked} leases revoked by envwrap "
              "(the last one when it stopped)")
        left = sorted(database.roles())
        print(f"PostgreSQL users left: {left or 'none'}")
        if total.failed or left:
            raise SystemExit("demo: a query failed, or a lease's user outlived envwrap")
    finally:
        database.stop()


def items(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/items", timeout=2) as response:
        return dict(json.load(response))


def database_rotation(database: Postgres, load: HttpLoad, rotation: int, pid: int,
                      user: str) -> tuple[int, str]:
    """Wait for envwrap's next credentials; check the handoff and the old user's end."""
    step(f"credentials rotation {rotation}/{PG_ROTATIONS}: waiting for the lease to near its "
         f"end, under {PG_LOAD_RATE:.0f} queries/s")
    since = time.monotonic()
    new = wait_for("the new generation", lambda: new_generation(load, since, pid),
                   timeout=PG_LEASE_TTL + 10)
    wait_for("the old generation to finish", lambda: reaped(pid))
    wait_for("the old user to be dropped", lambda: user not in database.roles(), timeout=10)
    now = items(load.port)
    load.wait_answers(20, timeout=10, since=time.monotonic())
    window = summarize(load.samples(), since, time.monotonic())
    connected = ", ".join(sorted(database.connected_users()))
    print(f"rotation {rotation}: pid {pid} -> {new}, {window.failed} of {window.requests} "
          f"queries failed\n  PostgreSQL user {user} -> {now['user']}\n"
          f"  connected now (pg_stat_activity): {connected}; {user} is dropped (pg_roles)")
    if window.failed or now["user"] == user:
        raise SystemExit("demo: the database rotation failed queries or kept the old user")
    return new, str(now["user"])


def main() -> int:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("demo: Node.js is needed for the example service (apt-get install nodejs)")
    vault_port, app_port, handoff_port, pg_port = (free_port(), free_port(), free_port(),
                                                   free_port())
    token = secrets.token_hex(16)
    data_dir = tempfile.mkdtemp(prefix="envwrap-demo-")
    vault = Vault(vault_port, token, data_dir)
    bao: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        step(f"starting an OpenBao dev server on 127.0.0.1:{vault_port}")
        bao = subprocess.Popen(
            [str(BIN / "bao"), "server", "-dev", f"-dev-root-token-id={token}",
             f"-dev-listen-address=127.0.0.1:{vault_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("OpenBao", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{vault_port}/v1/sys/health", timeout=1).status == 200)

        step("storing the service's secrets in Vault (KV v2 at secret/)")
        vault.put("secret/workflows/africastalking", f"api_key=at-{secrets.token_hex(8)}")
        vault.rotate_db_password()
        vault.put("secret/workflows/jwt", f"secret=jwt-{secrets.token_hex(16)}")
        print((EXAMPLE / "vault.env").read_text().strip())

        env = {**vault.env, "PORT": str(app_port), "STARTUP_DELAY_MS": STARTUP_DELAY_MS}
        step("envwrap check: what resolves, from where, which version (never values)")
        subprocess.run([str(BIN / "envwrap"), "check", "--env-file", "vault.env"],
                       cwd=EXAMPLE, env=env, check=True)

        part_restart(vault, env, node, app_port)
        part_handoff(vault, env, node, handoff_port, Path(data_dir))
        part_postgres(vault, env, node, pg_port, Path(data_dir))
        print(f"\ndemo: OK ({time.monotonic() - started:.0f}s)")
        return 0
    finally:
        step("cleaning up")
        if bao is not None and bao.poll() is None:
            bao.send_signal(signal.SIGTERM)
            try:
                bao.wait(timeout=15)
            except subprocess.TimeoutExpired:
                bao.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
