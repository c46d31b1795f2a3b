"""``--wait`` end to end: a burst of writes, and a slow writer, are one restart each.

The issue that asked for it: ten writes 50 ms apart to a ``ref+file://``
secret gave seven restarts, one of them with the empty value read between a
truncate and its write. The writes here are the stimulus (their pauses are
the point); the checks wait on deadlines.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from testsupport.helpers import canary, fp
from testsupport.rotation import VAR, Start, Wrapped, sh_child

pytestmark = pytest.mark.slow


def burst_of_writes(
    tmp_path: Path, base_env: dict[str, str], envwrap_watch: Start, *options: str
) -> tuple[Wrapped, list[str]]:
    """Start on a file secret, then write it ten times 50 ms apart (an editor's
    save each: truncate, then write); returns the run and [old, *burst]."""
    secret = tmp_path / "password"
    values = [canary("old"), *(canary(f"burst{i}") for i in range(10))]
    secret.write_text(values[0])
    run = envwrap_watch({**base_env, VAR: f"ref+file://{secret}"}, sh_child(), *options)
    run.wait_start(fp(values[0]))
    for value in values[1:]:
        secret.write_text(value)
        time.sleep(0.05)
    run.wait_start(fp(values[-1]), timeout=10)
    run.settle()
    return run, values


def test_ten_writes_50ms_apart_are_one_restart_with_the_final_content(
    tmp_path: Path, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    run, values = burst_of_writes(tmp_path, base_env, envwrap_watch)
    assert [fingerprint for _, fingerprint in run.starts()] == [fp(values[0]), fp(values[-1])]
    run.assert_clean(*values)


def test_negative_control_without_a_wait_the_burst_restarts_more_than_once(
    tmp_path: Path, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    run, _ = burst_of_writes(tmp_path, base_env, envwrap_watch, "--wait", "0")
    assert len(run.starts()) > 2


def test_a_slow_writer_never_reaches_a_child_half_written(
    tmp_path: Path, base_env: dict[str, str], envwrap_watch: Start
) -> None:
    secret = tmp_path / "password"
    old, new = canary("old"), canary("slowly-written-new-value")
    secret.write_text(old)
    run = envwrap_watch({**base_env, VAR: f"ref+file://{secret}"}, sh_child())
    first = run.wait_start(fp(old))
    fd = os.open(secret, os.O_WRONLY | os.O_TRUNC)  # the empty file is visible from here
    try:
        time.sleep(0.15)
        for start in range(0, len(new), 8):
            os.write(fd, new[start:start + 8].encode())
            time.sleep(0.15)
    finally:
        os.close(fd)
    second = run.wait_start(fp(new), timeout=10)
    run.settle()
    assert run.starts() == [(first, fp(old)), (second, fp(new))]
    run.assert_clean(old, new)
