"""A real PostgreSQL for the tests and the demo, and OpenBao's database engine on it.

:func:`start_postgres` runs the machine's PostgreSQL server (Debian's
``postgresql-15``, which ``scripts/setup.sh`` installs) in a fresh temporary
folder on a free loopback port, with password (SCRAM) authentication and a
random password for its superuser ``admin``. PostgreSQL refuses to run as root,
so as root the server runs as the ``postgres`` user (or ``nobody``) through
``setpriv``, in a folder given to that user. It holds one database, ``app``,
with a table ``items`` that the roles of :data:`CREATION` may read.

:func:`configure_database_engine` mounts OpenBao's database secrets engine at
``database/`` with the ``postgresql-database-plugin`` and a role whose
credentials (a PostgreSQL user per lease) live for ``ttl`` seconds.

The ``postgres`` fixture (a pytest plug-in, registered in ``tests/conftest.py``)
starts one server for the session and stops it at the end.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testsupport.helpers import stop_process

__all__ = ["CREATION", "Postgres", "configure_database_engine", "find_postgres", "npm_ci",
           "start_postgres"]

DATABASE = "app"
ADMIN = "admin"
#: what each lease's user is made of: it may log in until the lease ends and read items
CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT SELECT ON items TO "{{name}}";',
]
#: a revoked (or expired) lease's user is dropped
REVOCATION = [
    'REVOKE ALL ON items FROM "{{name}}";',
    'DROP ROLE IF EXISTS "{{name}}";',
]
SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items VALUES (1, 'invoice'), (2, 'reminder'), (3, 'receipt');
"""
INSTALL_HINT = ("PostgreSQL is not installed: run `bash scripts/setup.sh` as root "
                "(it installs Debian's postgresql-15), or put initdb on PATH")


def find_postgres() -> Path | None:
    """The folder with ``initdb`` and ``postgres``: Debian's newest, ``pg_config``'s, or PATH's."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                        reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            candidates.append(Path(subprocess.run([pg_config, "--bindir"], capture_output=True,
                                                  text=True, check=True).stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)
    return next((c for c in candidates if (c / "initdb").exists() and (c / "postgres").exists()),
                None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _unprivileged() -> tuple[list[str], int, int] | None:
    """As root: the ``setpriv`` prefix that runs a command as postgres (or nobody)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return (["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                     "--clear-groups", "--"], user.pw_uid, user.pw_gid)
    raise RuntimeError("running as root, and there is no postgres or nobody user to run "
                       "PostgreSQL as")


class Postgres:
    """A running server: ``host``, ``port``, the superuser's ``admin_password``, ``sql()``."""

    def __init__(self, bindir: Path, folder: Path, port: int, admin_password: str,
                 process: subprocess.Popen[bytes]) -> None:
        self.bindir = bindir
        self.folder = folder
        self.host = "127.0.0.1"
        self.port = port
        self.database = DATABASE
        self.admin = ADMIN
        self.admin_password = admin_password
        self.process = process

    def sql(self, query: str, database: str = DATABASE) -> list[list[str]]:
        """Run ``query`` as the superuser; the rows of its last statement, as text."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v",
             "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port), "-U", self.admin,
             "-d", database, "-c", query],
            env={**os.environ, "PGPASSWORD": self.admin_password, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    def roles(self) -> set[str]:
        """The users that may log in, other than the superuser (a lease's user each)."""
        return {row[0] for row in self.sql(
            "SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper")}

    def connected_users(self) -> set[str]:
        """Who holds a connection to ``app`` now (``pg_stat_activity``), the superuser aside."""
        return {row[0] for row in self.sql(
            f"SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = '{DATABASE}' "
            f"AND usename IS NOT NULL AND usename <> '{ADMIN}'")}

    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """A fast shutdown (SIGINT: it does not wait for clients), then the folder goes."""
        stop_process(self.process, signal.SIGINT, timeout=15)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(timeout: float = 30) -> Postgres:
    """initdb a fresh cluster in a temporary folder, start it, create ``app``."""
    bindir = find_postgres()
    if bindir is None:
        raise FileNotFoundError(INSTALL_HINT)
    # not under pytest's tmp_path: its folders are private to root, and the
    # server runs as another user
    folder = Path(tempfile.mkdtemp(prefix="envwrap-postgres-"))
    drop = _unprivileged()
    prefix: list[str] = []
    if drop is not None:
        prefix, uid, gid = drop
        os.chown(folder, uid, gid)
    password = secrets.token_hex(16)
    password_file = folder / "admin-password"
    password_file.write_text(password + "\n")
    if drop is not None:
        os.chown(password_file, drop[1], drop[2])
    password_file.chmod(0o600)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(folder)}
    init = subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(folder / "data"), "-U", ADMIN,
         f"--pwfile={password_file}", "--auth=scram-sha-256", "--encoding=UTF8",
         "--locale=C", "--no-sync"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    password_file.unlink()
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-2000:]}")
    port = _free_port()
    log = (folder / "postgres.log").open("wb")
    process = subprocess.Popen(
        [*prefix, str(bindir / "postgres"), "-D", str(folder / "data"), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder}",
         # a throw-away cluster: durability costs time and buys nothing
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=60"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    log.close()
    server = Postgres(bindir, folder, port, password, process)
    try:
        _wait_ready(server, timeout)
        server.sql(f"CREATE DATABASE {DATABASE}", database="postgres")
        server.sql(SCHEMA)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: Postgres, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited: {server.log()[-2000:]}")
        try:
            server.sql("SELECT 1", database="postgres")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready within {timeout}s: "
                                   f"{server.log()[-2000:]}") from None
        time.sleep(0.1)


def configure_database_engine(client: Any, server: Postgres, role: str = "app", *,
                              ttl: int = 3600, max_ttl: int | None = None) -> str:
    """OpenBao's database engine at ``database/`` on ``server``; returns ``database/creds/ROLE``.

    ``client`` is an hvac client with a token allowed to configure it (the dev
    root token). Each read of the path creates a PostgreSQL user with a lease of
    ``ttl`` seconds, renewable up to ``max_ttl`` (default: ``ttl``).
    """
    if "database/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("database", path="database")
    connection = f"pg-{server.port}"
    client.secrets.database.configure(
        name=connection, plugin_name="postgresql-database-plugin",
        connection_url=(f"postgresql://{{{{username}}}}:{{{{password}}}}@{server.host}:"
                        f"{server.port}/{DATABASE}?sslmode=disable"),
        username=ADMIN, password=server.admin_password, allowed_roles=["*"],
        verify_connection=True)
    client.secrets.database.create_role(
        name=role, db_name=connection, creation_statements=CREATION,
        revocation_statements=REVOCATION, default_ttl=ttl, max_ttl=max_ttl or ttl)
    return f"database/creds/{role}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the session (see the module's documentation)."""
    try:
        server = start_postgres()
    except FileNotFoundError as missing:
        pytest.fail(str(missing), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def npm_ci(folder: Path) -> None:
    """Install a Node example's dependencies from its lock file, once (``npm ci``)."""
    if (folder / "node_modules" / ".package-lock.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed (apt-get install npm)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                   check=True, timeout=300, stdout=subprocess.DEVNULL)
