"""``--ready log:REGEX`` (docs/rotation.md): ready once a line matches; output unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testsupport import envwrap_command
from testsupport.helpers import assert_not_leaked, canary

#: prints bytes that must arrive unchanged: a partial line, invalid UTF-8, a long
#: line, stderr lines; the ready line comes late, so "ready" must follow it
PROGRAM = r"""
import os, sys, time
os.write(1, b"starting\n")
os.write(1, b"no newline yet ")
os.write(2, b"warming up\n")
os.write(1, b"\xff\xfe binary\n")
os.write(1, b"x" * 100000 + b"\n")
time.sleep(0.3)
os.write(1, b"listening on port 3000\n")
time.sleep(0.3)
os.write(2, b"after ready\n")
"""
EXPECTED_OUT = (b"starting\nno newline yet \xff\xfe binary\n" + b"x" * 100000 + b"\n"
                b"listening on port 3000\n")


def run(workdir: Path, env: dict[str, str], *options: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*envwrap_command(), "--no-env-file", "--init", "--log-level", "info", *options,
         "--", sys.executable, "-c", PROGRAM],
        env=env, cwd=workdir, capture_output=True, timeout=60, check=False,
    )


def test_ready_once_a_line_matches_and_the_output_passes_unchanged(
    workdir: Path, base_env: dict[str, str]
) -> None:
    result = run(workdir, base_env, "--ready", r"log:listening on port \d+")
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED_OUT
    err = result.stderr.decode()
    assert "warming up\n" in err and "after ready\n" in err
    ready = err.index("the program is ready")
    assert err.index("warming up") < ready < err.index("after ready")


def test_negative_control_a_line_that_never_comes_is_never_ready(
    workdir: Path, base_env: dict[str, str]
) -> None:
    result = run(workdir, base_env, "--ready", "log:listening on port 4000",
                 "--ready-timeout", "0.2s")
    assert result.returncode == 0
    assert result.stdout == EXPECTED_OUT
    assert "the program is ready" not in result.stderr.decode()
    assert "the program is not ready: not ready within 0.2s" in result.stderr.decode()


def test_with_mask_the_lines_are_matched_and_masked(
    workdir: Path, base_env: dict[str, str]
) -> None:
    value = canary()
    secret = workdir / "secret"
    secret.write_text(value)
    program = ("import os, time\nprint('password', os.environ['PW'], flush=True)\n"
               "print('listening', flush=True)\ntime.sleep(0.3)\n")
    result = subprocess.run(
        [*envwrap_command(), "--no-env-file", "--mask", "--log-level", "info",
         "--ready", "log:^listening$", "--", sys.executable, "-c", program],
        env={**base_env, "PW": f"ref+file://{secret}"}, cwd=workdir, capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "password *****\nlistening\n"
    assert "the program is ready" in result.stderr
    assert_not_leaked(value, result.stdout, result.stderr)


def test_a_bad_regular_expression_is_a_configuration_error(
    workdir: Path, base_env: dict[str, str]
) -> None:
    result = run(workdir, base_env, "--ready", "log:(unclosed")
    assert result.returncode == 78
    assert "--ready" in result.stderr.decode() and "regular expression" in result.stderr.decode()
    assert result.stdout == b""
