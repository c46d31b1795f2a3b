"""No process that envwrap leaves beside the program can be read by it (docs/SECURITY.md).

The program runs as the same user as envwrap and its guardian: as that user,
a probe reads ``/proc/PID/environ`` and ``/proc/PID/mem`` of every other
process of its uid, looking for the Vault token that envwrap scrubbed from
the program's own environment. Run as ``nobody`` (the suite runs as root).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testsupport import PROGRAMS, envwrap_command
from testsupport.helpers import assert_not_leaked, canary, wait_until
from testsupport.supervise_support import kill_quietly
from testsupport.unprivileged import as_nobody, reachable

PROBE = PROGRAMS / "memory_probe.py"


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="envwrap-unreadable-"))
    path.chmod(0o755)
    try:
        with reachable(path, PROBE):
            yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def setup(folder: Path, base_env: dict[str, str]) -> tuple[str, dict[str, str]]:
    token = "hvs." + canary()
    needle = folder / "needle"
    needle.write_text(token)
    needle.chmod(0o644)
    secret = folder / "pw"
    secret.write_text(canary())
    secret.chmod(0o644)
    env = {**base_env, "VAULT_TOKEN": token, "PW": f"ref+file://{secret}",
           "PROBE_NEEDLE_FILE": str(needle)}
    return token, env


def probe(mode: str, folder: Path, base_env: dict[str, str]) -> tuple[str, list[str]]:
    token, env = setup(folder, base_env)
    result = subprocess.run(
        [*as_nobody(), *envwrap_command(), mode, "--no-env-file", "--",
         sys.executable, str(PROBE)],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    assert_not_leaked(token, result.stderr)
    lines = result.stdout.splitlines()
    assert lines and lines[-1].startswith("done"), result.stdout
    return token, lines[:-1]


@pytest.mark.parametrize("mode", ["--init", "--watch", "--mask"])
def test_the_program_cannot_read_the_token_from_envwrap_or_its_guardian(
    mode: str, folder: Path, base_env: dict[str, str]
) -> None:
    _token, looked_at = probe(mode, folder, base_env)
    # envwrap and its guardian, at least (the guardian is forked in every mode here)
    assert len(looked_at) >= 2, looked_at
    for line in looked_at:
        assert "found" not in line, line
        # non-dumpable: /proc refuses both to another process of the same user
        assert "environ=denied" in line and "mem=denied" in line, line


def test_negative_control_the_probe_finds_the_token_in_a_dumpable_process(
    folder: Path, base_env: dict[str, str]
) -> None:
    token, env = setup(folder, base_env)
    # a process of the same user that holds the token and is dumpable
    holder = subprocess.Popen(
        [*as_nobody(), sys.executable, "-c", "import sys, time; sys.stdin.read()"],
        env={**env, "HELD": token}, stdin=subprocess.PIPE, cwd=folder,
    )
    try:
        result = subprocess.run(
            [*as_nobody(), sys.executable, str(PROBE)],
            env={**base_env, "PROBE_NEEDLE_FILE": env["PROBE_NEEDLE_FILE"]},
            capture_output=True, text=True, timeout=60, check=False, cwd=folder,
        )
        assert f"{holder.pid} environ=found mem=found" in result.stdout, result.stdout
    finally:
        kill_quietly([holder.pid])
        holder.wait(10)


def guardian_of(envwrap: int) -> int:
    """The guardian: a copy of envwrap (same command line) in a session of its own."""
    command = psutil.Process(envwrap).cmdline()

    def found() -> int | None:
        for process in psutil.process_iter(["pid", "cmdline"]):
            if process.pid != envwrap and process.info["cmdline"] == command \
                    and os.getsid(process.pid) != os.getsid(envwrap):
                return process.pid
        return None

    pid = wait_until(found, timeout=10)
    assert isinstance(pid, int)
    return pid


def copies_in(pid: int, value: bytes) -> tuple[int, int]:
    """How many times ``value`` is in the process's environ and its memory (as root)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().count(value)
    found = 0
    mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split()
            if "r" not in fields[1] or fields[-1] in ("[vvar]", "[vsyscall]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                found += os.pread(mem, end - start, start).count(value)
            except OSError:
                continue
    finally:
        os.close(mem)
    return environ, found


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_the_guardian_erases_the_credentials_from_its_own_memory(
    folder: Path, base_env: dict[str, str]
) -> None:
    # Even a reader that may (root) finds no token in the guardian: it erased its
    # copy of envwrap's environment and of every credential value on its heap.
    # envwrap itself holds the token (it needs it), the negative control.
    token, env = setup(folder, base_env)
    env["AWS_SECRET_ACCESS_KEY"] = aws = canary()
    ew = subprocess.Popen([*envwrap_command(), "--watch", "--no-env-file", "--", "sleep", "30"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        keeper = guardian_of(ew.pid)
        wait_until(lambda: copies_in(keeper, token.encode()) == (0, 0), timeout=10)
        assert copies_in(keeper, aws.encode()) == (0, 0)
        assert copies_in(ew.pid, token.encode())[1] > 0
    finally:
        ew.kill()
        ew.wait(10)
