"""``--listen`` (docs/rotation.md): the sockets reach the program as fds 3, 4, ... with LISTEN_*.

A Python child reports what it finds: its descriptors (``/proc/self/fd``), the
type of fd 3 and whether it listens (``SO_ACCEPTCONN``), and the LISTEN_*
variables, with LISTEN_PID compared to its own PID -- what sd_listen_fds(3)
checks. Real envwrap, real sockets; parsing gets fast unit tests.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from envwrap.errors import ConfigError
from envwrap.process.listen import listen_environment, open_listeners, parse_address
from testsupport.helpers import canary, run_envwrap

REPORT = r'''
import json, os, socket, sys
fds = sorted(int(n) for n in os.listdir("/proc/self/fd") if int(n) > 2)
found = []
count = int(os.environ.get("LISTEN_FDS", "0"))
for fd in range(3, 3 + count):
    sock = socket.socket(fileno=fd)
    found.append({
        "fd": fd,
        "family": int(sock.family),
        "type": int(sock.type),
        "listening": sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
        # an abstract unix name comes back as bytes with a leading NUL
        "address": (lambda a: "@" + a[1:].decode() if isinstance(a, bytes) else a)(
            sock.getsockname()),
    })
    sock.detach()
print(json.dumps({
    # the listing's own descriptor is the one above the passed sockets
    "fds": fds[:-1],
    "sockets": found,
    "LISTEN_FDS": os.environ.get("LISTEN_FDS"),
    "LISTEN_PID_is_mine": os.environ.get("LISTEN_PID") == str(os.getpid()),
    "LISTEN_FDNAMES": os.environ.get("LISTEN_FDNAMES"),
    "secret_seen": bool(os.environ.get("APP_SECRET")),
}))
'''


def report(args: list[str], tmp_path: Path, base_env: dict[str, str]) -> dict[str, object]:
    child = tmp_path / "report.py"
    child.write_text(REPORT)
    secret = canary()
    (tmp_path / "secret").write_text(secret)
    env = {**base_env, "APP_SECRET": f"ref+file://{tmp_path / 'secret'}"}
    result = run_envwrap(["--no-env-file", *args, "--", sys.executable, str(child)],
                         env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert isinstance(answer, dict)
    return answer


@pytest.mark.parametrize("mode", [[], ["--init"], ["--mask"]], ids=["exec", "init", "mask"])
def test_sockets_arrive_on_fd_3_with_the_listen_variables(
    mode: list[str], tmp_path: Path, base_env: dict[str, str]
) -> None:
    path = tmp_path / "app.sock"
    answer = report([*mode, "--listen", "127.0.0.1:0", "--listen", f"unix:{path}"],
                    tmp_path, base_env)
    assert answer["fds"] == [3, 4]  # and nothing else beyond 0, 1, 2
    assert answer["LISTEN_FDS"] == "2"
    assert answer["LISTEN_PID_is_mine"] is True
    assert answer["LISTEN_FDNAMES"] == f"127.0.0.1_0:unix_{str(path).strip('/').replace('/', '_')}"
    tcp, unix = answer["sockets"]  # type: ignore[misc]
    assert (tcp["family"], tcp["type"], tcp["listening"]) == (socket.AF_INET, socket.SOCK_STREAM, 1)
    assert tcp["address"][0] == "127.0.0.1" and tcp["address"][1] > 0
    assert (unix["family"], unix["listening"]) == (socket.AF_UNIX, 1)
    assert unix["address"] == str(path)
    assert answer["secret_seen"] is True
    # envwrap removes the socket file it made once it is done (supervised modes)
    if mode:
        assert not path.exists()


def test_every_interface_is_dual_stack(tmp_path: Path, base_env: dict[str, str]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    answer = report(["--init", "--listen", ":0"], tmp_path, base_env)
    (sock,) = answer["sockets"]  # type: ignore[misc]
    assert sock["family"] == socket.AF_INET6 and sock["address"][0] == "::"


def test_an_address_in_use_is_exit_78_naming_it(tmp_path: Path, base_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for mode in ([], ["--init"]):
            result = run_envwrap(["--no-env-file", *mode, "--listen", f"127.0.0.1:{port}",
                                  "--", "true"], env=base_env, cwd=tmp_path)
            assert result.returncode == 78
            assert f"--listen '127.0.0.1:{port}'" in result.stderr
            assert "Traceback" not in result.stderr


def test_a_stale_unix_socket_is_replaced_and_a_live_one_or_a_file_refused(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    stale = tmp_path / "stale.sock"
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(stale))
    left.close()  # the file stays, nobody listens: a previous run's leftover
    answer = report(["--init", "--listen", f"unix:{stale}"], tmp_path, base_env)
    assert answer["LISTEN_FDS"] == "1"

    live = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(live))
        server.listen()
        result = run_envwrap(["--no-env-file", "--listen", f"unix:{live}", "--", "true"],
                             env=base_env, cwd=tmp_path)
        assert result.returncode == 78 and "another process is listening" in result.stderr
        assert live.exists()

    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    result = run_envwrap(["--no-env-file", "--listen", f"unix:{regular}", "--", "true"],
                         env=base_env, cwd=tmp_path)
    assert result.returncode == 78 and "not a socket" in result.stderr
    assert regular.read_text() == "keep me"


def test_bad_listen_values_are_config_errors(tmp_path: Path, base_env: dict[str, str]) -> None:
    for value in ("8080", "127.0.0.1:http", "[::1]8080", "unix:", "127.0.0.1:70000"):
        result = run_envwrap(["--no-env-file", "--listen", value, "--", "true"],
                             env=base_env, cwd=tmp_path)
        assert result.returncode == 78, value
        assert repr(value) in result.stderr
    via_env = run_envwrap(["--no-env-file", "--", "true"],
                          env={**base_env, "ENVWRAP_LISTEN": "nope"}, cwd=tmp_path)
    assert via_env.returncode == 78


def test_parse_address_forms() -> None:
    assert parse_address("127.0.0.1:80").sockaddr == ("127.0.0.1", 80)
    assert parse_address("127.0.0.1:80").family == socket.AF_INET
    six = parse_address("[::1]:8080")
    assert (six.family, six.sockaddr) == (socket.AF_INET6, ("::1", 8080))
    anywhere = parse_address(":9000")
    assert anywhere.sockaddr[1] == 9000 and anywhere.sockaddr[0] in ("::", "0.0.0.0")
    unix = parse_address("unix:relative.sock")
    assert unix.family == socket.AF_UNIX and unix.sockaddr == os.path.abspath("relative.sock")
    assert parse_address("localhost:0").family in (socket.AF_INET, socket.AF_INET6)
    for bad in ("nohost", ":", "[::1]", "a:b", ""):
        with pytest.raises(ConfigError):
            parse_address(bad)


def test_open_listeners_environment_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    listeners = open_listeners(["127.0.0.1:0", f"unix:{path}"])
    try:
        assert listen_environment(listeners)["LISTEN_FDS"] == "2"
        assert all(not os.get_inheritable(listener.fileno()) for listener in listeners)
        assert path.exists()
    finally:
        for listener in listeners:
            listener.close()
    assert not path.exists()
    assert listen_environment([]) == {}


def test_an_abstract_unix_socket(tmp_path: Path, base_env: dict[str, str]) -> None:
    name = f"envwrap-test-{os.getpid()}-{canary()}"
    answer = report(["--init", "--listen", f"unix:@{name}"], tmp_path, base_env)
    (sock,) = answer["sockets"]  # type: ignore[misc]
    assert sock["family"] == socket.AF_UNIX and sock["listening"] == 1
    assert sock["address"] == f"@{name}"
    assert answer["LISTEN_FDS"] == "1"
