"""``--ready`` checks (docs/rotation.md): parsing, and each check against real sockets and processes."""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from envwrap.errors import ConfigError
from envwrap.process.ready import (
    DurationCheck,
    HttpCheck,
    NotifyCheck,
    TcpCheck,
    parse_check,
)
from testsupport import envwrap_command
from testsupport.helpers import run_envwrap, wait_until


def test_parse_check_forms() -> None:
    assert isinstance(parse_check("notify"), NotifyCheck)
    http = parse_check("http://127.0.0.1:8080/healthz?deep=1")
    assert isinstance(http, HttpCheck)
    assert (http.host, http.port, http.path, http.secure) == ("127.0.0.1", 8080, "/healthz?deep=1",
                                                              False)
    https = parse_check("https://localhost")
    assert isinstance(https, HttpCheck) and (https.port, https.path, https.secure) == (443, "/",
                                                                                       True)
    tcp = parse_check("tcp://[::1]:5432")
    assert isinstance(tcp, TcpCheck) and (tcp.host, tcp.port) == ("::1", 5432)
    duration = parse_check("1500ms")
    assert isinstance(duration, DurationCheck) and duration.seconds == 1.5
    for bad in ("notify-me", "tcp://nohost", "tcp://h:99999", "http://:80/", "ftp://x", "-1s"):
        with pytest.raises(ConfigError, match="--ready"):
            parse_check(bad)


def test_bad_ready_values_and_combinations_on_the_command_line(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    bad = run_envwrap(["--no-env-file", "--init", "--ready", "sometime", "--", "true"],
                      env=base_env, cwd=tmp_path)
    assert bad.returncode == 78 and "'sometime' is not a check" in bad.stderr
    exec_mode = run_envwrap(["--no-env-file", "--ready", "1s", "--", "true"],
                            env=base_env, cwd=tmp_path)
    assert exec_mode.returncode == 64 and "--ready needs a supervised program" in exec_mode.stderr
    handoff = run_envwrap(["--no-env-file", "--watch", "--on-change", "handoff", "--", "true"],
                          env=base_env, cwd=tmp_path)
    assert handoff.returncode == 64 and "--on-change handoff needs --ready" in handoff.stderr
    via_env = run_envwrap(["--no-env-file", "--watch", "--", "true"],
                          env={**base_env, "ENVWRAP_ON_CHANGE": "handoff"}, cwd=tmp_path)
    assert via_env.returncode == 64


class Reports:
    def __init__(self) -> None:
        self.pids: list[int] = []

    def __call__(self, pid: int) -> None:
        self.pids.append(pid)


def test_tcp_check_waits_for_a_listener() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        reports = Reports()
        cancel = TcpCheck("127.0.0.1", port).watch(42, reports)
        try:
            assert reports.pids == []  # bound, not listening: connections are refused
            probe.listen()
            wait_until(lambda: reports.pids == [42], timeout=10)
        finally:
            cancel()


class _Health(http.server.BaseHTTPRequestHandler):
    status = 503
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health() -> Iterator[tuple[type[_Health], int]]:
    handler = type("Health", (_Health,), {"status": 503, "hits": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_check_needs_a_2xx_or_3xx(health: tuple[type[_Health], int]) -> None:
    handler, port = health
    reports = Reports()
    cancel = parse_check(f"http://127.0.0.1:{port}/healthz").watch(7, reports)
    try:
        wait_until(lambda: handler.hits >= 3, timeout=10)  # answered 503 three times
        assert reports.pids == []
        handler.status = 302
        wait_until(lambda: reports.pids == [7], timeout=10)
    finally:
        cancel()


def test_duration_check_reports_after_the_duration_unless_cancelled() -> None:
    reports = Reports()
    DurationCheck(0.2).watch(1, reports)
    cancelled = Reports()
    DurationCheck(0.2).watch(2, cancelled)()  # cancelled at once
    wait_until(lambda: reports.pids == [1], timeout=10)
    assert cancelled.pids == []


SENDER = r"""
import os, socket, sys, time
name = os.environ["NOTIFY_SOCKET"]
address = "\0" + name[1:]
sys.stdin.readline()
if sys.argv[1] == "grandchild":
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        time.sleep(60)
        sys.exit(0)
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    sock.sendto(b"STATUS=starting\nREADY=1\n", address)
time.sleep(60)  # alive while envwrap reads the message: a gone sender cannot be attributed
"""


def test_notify_accepts_only_the_generation_and_its_descendants() -> None:
    check = NotifyCheck()
    check.open()
    children: list[subprocess.Popen[str]] = []
    try:
        name = check.environment()["NOTIFY_SOCKET"]
        assert name.startswith("@envwrap/")
        env = {"NOTIFY_SOCKET": name, "PATH": "/usr/bin:/bin"}

        def spawn(mode: str) -> subprocess.Popen[str]:
            child = subprocess.Popen([sys.executable, "-c", SENDER, mode], env=env,
                                     stdin=subprocess.PIPE, text=True)
            children.append(child)
            return child

        silent, direct, indirect = spawn("direct"), spawn("direct"), spawn("grandchild")
        reports = Reports()
        for child in (silent, direct, indirect):
            check.watch(child.pid, reports)
        # a foreign process (this test) claims readiness first: nobody's
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", "\0" + name[1:])
        assert direct.stdin is not None
        direct.stdin.write("go\n")
        direct.stdin.flush()
        # one receiving thread, in order: the foreign message was handled before
        wait_until(lambda: reports.pids, timeout=10)
        assert reports.pids == [direct.pid]
        assert indirect.stdin is not None
        indirect.stdin.write("go\n")
        indirect.stdin.flush()
        wait_until(lambda: len(reports.pids) == 2, timeout=10)
        assert reports.pids == [direct.pid, indirect.pid]
    finally:
        check.close()
        for child in children:
            child.kill()
            child.wait()


@pytest.mark.slow
def test_first_generation_ready_by_http_is_reported(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    audit = tmp_path / "audit.jsonl"
    server = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *args): pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [*envwrap_command(), "--no-env-file", "--init", "--audit-log", str(audit),
         "--ready", f"http://127.0.0.1:{port}/", "--", sys.executable, "-c", server],
        env={**base_env, "PORT": str(port)}, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )
    try:
        def events() -> list[dict[str, object]]:
            if not audit.exists():
                return []
            lines = [json.loads(line) for line in audit.read_text().splitlines() if line]
            # the generation's own events (the log also records the resolution)
            return [e for e in lines if e["event"] in ("start", "ready", "child_exit")]

        wait_until(lambda: [e["event"] for e in events()] == ["start", "ready"], timeout=30)
        first, ready = events()
        assert first["reason"] == "initial" and ready["pid"] == first["pid"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 128 + signal.SIGTERM  # http.server dies of SIGTERM
        assert [e["event"] for e in events()] == ["start", "ready", "child_exit"]
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_a_probe_of_the_shared_socket_is_warned_about(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_envwrap(
        ["--no-env-file", "--init", "--on-change", "handoff", "--listen", f"127.0.0.1:{port}",
         "--ready", f"tcp://127.0.0.1:{port}", "--", "true"],
        env=base_env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "--ready probes a --listen socket" in result.stderr


# --- through the real command: who may say READY=1 (docs/SECURITY.md, "Readiness") ------

#: the program: says where its socket is, lets the test start an intruder, then
#: (on "go" on stdin) sends READY=1 itself
WAITER = r"""
import os, socket, subprocess, sys, time
print("waiting", os.getpid(), os.environ["NOTIFY_SOCKET"], flush=True)
line = sys.stdin.readline().strip()
if line == "as-nobody":  # a descendant of another user claims readiness for it
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                    sys.executable, "-c", sys.argv[1], os.environ["NOTIFY_SOCKET"]], check=True)
    print("sent as nobody", flush=True)
    line = sys.stdin.readline().strip()
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    sock.sendto(b"READY=1", "\0" + os.environ["NOTIFY_SOCKET"][1:])
time.sleep(60)
"""
#: READY=1 to the socket named in argv[1], from a process that stays alive meanwhile
SEND = r"""
import socket, sys, time
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    sock.sendto(b"READY=1", "\0" + sys.argv[1][1:])
time.sleep(1)
"""
#: joins the process group of argv[1] (same session: allowed), then sends
JOIN_AND_SEND = r"""
import os, sys
os.setpgid(0, int(sys.argv[1]))
sys.argv = sys.argv[1:]
""" + SEND


@pytest.mark.parametrize("intruder", ["joins-the-group", "another-user"])
def test_ready_from_a_process_outside_the_generation_is_ignored(
    intruder: str, tmp_path: Path, base_env: dict[str, str]
) -> None:
    from testsupport.helpers import LineCollector

    proc = subprocess.Popen(
        [*envwrap_command(), "--no-env-file", "--init", "--ready", "notify", "--log-level",
         "debug", "--", sys.executable, "-c", WAITER, SEND],
        env=base_env, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    log = LineCollector(proc.stderr)
    try:
        _, pid, name = proc.stdout.readline().split()
        if intruder == "joins-the-group":
            # a sibling in envwrap's session joins the generation's process group
            joiner = subprocess.run([sys.executable, "-c", JOIN_AND_SEND, pid, name],
                                    env=base_env, timeout=30, check=False)
            assert joiner.returncode == 0
        else:
            proc.stdin.write("as-nobody\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "sent as nobody"
        log.wait_for("ignored READY=1 from a process of no generation")
        assert "the program is ready" not in log.text()
        proc.stdin.write("go\n")  # the program itself: accepted (the check can pass)
        proc.stdin.flush()
        log.wait_for("the program is ready")
    finally:
        proc.kill()
        proc.wait(10)
