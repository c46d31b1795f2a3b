"""The program inherits no descriptor beyond 0, 1, 2 and the --listen sockets,
even one above the soft RLIMIT_NOFILE (opened before the limit was lowered)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testsupport import envwrap_command

#: bash (dash takes one-digit descriptors only) holds descriptor 1500, inheritable, then lowers its soft limit below it
HIGH_FD = 'exec 1500>"$1"; ulimit -Sn 1024; shift; exec "$@"'
LIST = ["python3", "-c", "import os; print(*sorted(int(n) for n in os.listdir('/proc/self/fd')))"]


def descriptors(workdir: Path, base_env: dict[str, str], *command: str) -> list[int]:
    result = subprocess.run(
        ["bash", "-c", HIGH_FD, "bash", str(workdir / "held"), *command],
        env=base_env, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    return [int(n) for n in result.stdout.split()]


def test_negative_control_the_high_descriptor_is_inherited_without_envwrap(
    workdir: Path, base_env: dict[str, str]
) -> None:
    assert 1500 in descriptors(workdir, base_env, *LIST)


@pytest.mark.parametrize("mode", ["--init", "--mask", "--watch"])
def test_a_descriptor_above_the_soft_limit_does_not_reach_the_program(
    mode: str, workdir: Path, base_env: dict[str, str]
) -> None:
    found = descriptors(workdir, base_env, *envwrap_command(), mode, "--no-env-file", "--", *LIST)
    assert found == [0, 1, 2, 3]  # 3: the listing's own descriptor


def test_the_listen_sockets_still_arrive_on_3_and_up(
    workdir: Path, base_env: dict[str, str]
) -> None:
    found = descriptors(workdir, base_env, *envwrap_command(), "--init", "--no-env-file",
                        "--listen", "127.0.0.1:0", "--", *LIST)
    assert found == [0, 1, 2, 3, 4]  # 3: the socket, 4: the listing's own
