"""The team's example service (examples/node-server/server.js) keeps its side of docs/rotation.md.

Run directly, without envwrap, with the socket, variables and notify socket a
supervisor would give it, so that a failure here points at the example and not
at envwrap: it serves on fd 3 when LISTEN_PID is its own, sends READY=1 once it
listens, refuses a DATABASE_URL it cannot use without printing it, and answers
the requests in flight when asked to stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport import ROOT
from testsupport.helpers import LineCollector, assert_not_leaked, canary, wait_until
from testsupport.http_load import HttpLoad, reaped, request_once, summarize

NODE = shutil.which("node")
SERVER = ROOT / "examples" / "node-server" / "server.js"

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

#: dup2 the passed socket to fd 3, set LISTEN_PID to our own PID (which exec keeps),
#: then exec node: what envwrap's spawn does in the forked child.
LAUNCH_ON_FD3 = """
import os, sys
fd, pid_mode, node, server = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.dup2(fd, 3)
os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_FDNAMES"] = "http"
os.environ["LISTEN_PID"] = str(os.getpid() if pid_mode == "own" else 1)
os.execv(node, [node, server])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(**extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_ENV": "test"}
    env.update(extra)
    return env


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str],
            pass_fds: tuple[int, ...] = ()) -> Iterator[tuple[subprocess.Popen[str], LineCollector]]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, pass_fds=pass_fds, cwd=SERVER.parent,
                            start_new_session=True)
    lines = LineCollector(proc.stdout)  # type: ignore[arg-type]
    try:
        yield proc, lines
    finally:
        # the whole group: the notify helper lingers a few seconds after READY=1
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def socket_fds(pid: int) -> int:
    """How many sockets a process holds (its listener, plus one per accepted connection)."""
    count = 0
    for entry in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{entry}").startswith("socket:")
    return count


def on_fd3(listener: socket.socket, pid_mode: str) -> list[str]:
    assert NODE is not None
    return [sys.executable, "-c", LAUNCH_ON_FD3, str(listener.fileno()), pid_mode, NODE,
            str(SERVER)]


def test_serves_on_the_inherited_socket_when_listen_pid_is_its_own() -> None:
    env = server_env(PORT=str(free_port()))  # a port it must not bind
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with running(on_fd3(listener, "own"), env, (listener.fileno(),)) as (proc, lines):
            lines.wait_for("ready on fd 3", timeout=30)
            listener.close()  # only the service's copy is left: the answer is its own
            sample = request_once("127.0.0.1", port, "/", timeout=10)
            assert sample.outcome == "ok"
            assert sample.pid == proc.pid
            assert request_once("127.0.0.1", int(env["PORT"]), "/", 2).outcome == "refused"


def test_ignores_sockets_meant_for_another_process() -> None:
    # sd_listen_fds(): LISTEN_PID is not ours, so the variables were inherited
    # from somebody else: bind PORT as usual.
    env = server_env(PORT=str(free_port()))
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            running(on_fd3(listener, "other"), env, (listener.fileno(),)) as (proc, lines):
        lines.wait_for(f"ready on 127.0.0.1:{env['PORT']}", timeout=30)
        sample = request_once("127.0.0.1", int(env["PORT"]), "/", timeout=10)
        assert (sample.outcome, sample.pid) == ("ok", proc.pid)


@pytest.mark.skipif(shutil.which("perl") is None, reason="the example notifies through perl")
def test_sends_ready_once_it_listens_and_not_before_its_startup_delay(tmp_path: Path) -> None:
    assert NODE is not None
    path = str(tmp_path / "notify")
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        notify.settimeout(30)
        env = server_env(PORT=str(port), NOTIFY_SOCKET=path, STARTUP_DELAY_MS="300")
        started = time.monotonic()
        with running([NODE, str(SERVER)], env) as (proc, _lines):
            data, ancillary, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(12))
            elapsed = time.monotonic() - started
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            assert fields == {"READY": "1", "MAINPID": str(proc.pid)}
            # envwrap attributes the datagram by its sender's parent chain, which it
            # can read only while the sender lives: the sender is the service's child
            # and still there once the message was read.
            (_, _, creds), = ancillary
            sender = int.from_bytes(creds[:4], "little")
            stat = Path(f"/proc/{sender}/stat").read_text()
            assert int(stat[stat.rfind(")") + 2:].split()[1]) == proc.pid
            assert elapsed >= 0.3  # a lower bound only: never flaky on a loaded machine
            # READY=1 is sent from the listening callback: the health path answers now
            health = request_once("127.0.0.1", port, "/healthz", timeout=10)
            assert (health.outcome, health.pid) == ("ok", proc.pid)


def test_refuses_a_database_url_it_cannot_use_without_printing_it() -> None:
    assert NODE is not None
    password = canary("pw") + "/not-a-port"
    env = server_env(PORT=str(free_port()),
                     DATABASE_URL=f"postgresql://workflows:{password}@localhost:5432/workflows")
    result = subprocess.run([NODE, str(SERVER)], env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1
    assert "DATABASE_URL (fingerprint " in result.stderr
    assert_not_leaked(password, result.stdout, result.stderr)
    assert_not_leaked(password.split("/")[0], result.stdout, result.stderr)


def test_prints_fingerprints_never_values() -> None:
    secret = canary("jwt")
    port = free_port()
    env = server_env(PORT=str(port), JWT_SECRET=secret,
                     DATABASE_URL=f"postgresql://u:{canary('pw')}@db:5432/w")
    assert NODE is not None
    with running([NODE, str(SERVER)], env) as (proc, lines):
        lines.wait_for("ready on", timeout=30)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        body = json.loads(answer.partition("\r\n\r\n")[2])
        assert len(body["jwtSecret"]) == 12
        assert_not_leaked(secret, answer, lines.join())
        assert_not_leaked(env["DATABASE_URL"], answer, lines.join())


def test_sigterm_answers_the_request_in_flight_then_exits_0() -> None:
    assert NODE is not None
    port = free_port()
    with running([NODE, str(SERVER)], server_env(PORT=str(port))) as (proc, lines):
        lines.wait_for("ready on", timeout=30)
        before = socket_fds(proc.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers not finished yet
            # the request is in flight once the service accepted the connection
            wait_until(lambda: socket_fds(proc.pid) > before, timeout=10)
            proc.send_signal(signal.SIGTERM)
            lines.wait_for("SIGTERM: finishing requests in flight", timeout=10)
            sock.sendall(b"Connection: close\r\n\r\n")
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert proc.wait(10) == 0
        # it stopped accepting: a new connection is refused
        assert request_once("127.0.0.1", port, "/", timeout=5).outcome == "refused"


# --- under envwrap: the example and the handoff contract together ----------------------------------------------


def write_secret(path: Path, value: str) -> None:
    """Replace the file at once, as a secret volume does (envwrap watches the folder)."""
    temporary = path.with_suffix(".new")
    temporary.write_text(value)
    os.replace(temporary, path)


def rotations(audit: Path, outcome: str) -> int:
    if not audit.exists():
        return 0
    records = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    return sum(1 for r in records if r.get("event") == "rotation" and r.get("outcome") == outcome)


def answering_pid(port: int) -> int | None:
    sample = request_once("127.0.0.1", port, "/", timeout=5)
    return sample.pid if sample.outcome == "ok" else None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("perl") is None, reason="the example notifies through perl")
def test_handoff_under_envwrap_loses_nothing_and_rolls_back_a_rejected_password(
        tmp_path: Path, base_env: dict[str, str]) -> None:
    """The demo's story as a test: the real example, envwrap, load, a good and a bad value."""
    from testsupport import envwrap_command

    assert NODE is not None
    secret_file = tmp_path / "secrets" / "password"
    secret_file.parent.mkdir()
    values = [canary("pw"), canary("pw"), canary("pw") + "/breaks-the-url"]
    write_secret(secret_file, values[0])
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    env = {**base_env, "STARTUP_DELAY_MS": "300",
           "DATABASE_URL": f"postgresql://workflows:${{ref+file://{secret_file}}}@db:5432/w"}
    argv = [*envwrap_command(), "--no-env-file", "--watch", "--interval", "1s",
            "--listen", f"127.0.0.1:{port}", "--ready", "notify", "--on-change", "handoff",
            "--audit-log", str(audit), "--", NODE, str(SERVER)]
    with running(argv, env) as (envwrap, output):
        first = wait_until(lambda: answering_pid(port), timeout=30)
        assert isinstance(first, int)
        with HttpLoad("127.0.0.1", port, connections=4, rate=150, timeout=10,
                      max_seconds=90) as load:
            assert load.wait_answers(20, timeout=20)
            begin = time.monotonic()
            write_secret(secret_file, values[1])
            wait_until(lambda: rotations(audit, "applied") >= 1 and reaped(first), timeout=30)
            second = wait_until(lambda: answering_pid(port), timeout=10)
            assert second not in (None, first)
            write_secret(secret_file, values[2])
            wait_until(lambda: rotations(audit, "rolled_back") >= 1, timeout=30)
            since = time.monotonic()
            assert load.wait_answers(20, timeout=20, since=since)
            end = time.monotonic()
        window = summarize(load.samples(), begin, end)
        assert window.failed == 0, window
        assert window.pids == (first, second), window  # the rejected one never answered
        assert not reaped(int(str(second))), "the old generation must keep serving"
        assert envwrap.poll() is None
        envwrap.send_signal(signal.SIGTERM)
        assert envwrap.wait(30) == 0
        text = output.join()
    assert "DATABASE_URL" in text  # the rollback names the variable...
    for value in values:  # ...and no output shows a value
        assert_not_leaked(value, text, audit.read_text())
