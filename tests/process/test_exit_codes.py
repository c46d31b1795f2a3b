"""Exit codes across modes (docs/reference.md): the child's code, 128+N, 126 and 127."""

from __future__ import annotations

from pathlib import Path

import pytest

from testsupport.helpers import run_envwrap

MODES = {"exec": [], "init": ["--init"], "watch": ["--watch"]}
CODES = [0, 1, 2, 42, 255]
SIGNALS = {"TERM": 143, "KILL": 137, "USR1": 138, "INT": 130}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", CODES)
def test_the_childs_exit_code(mode: str, code: int, workdir: Path, base_env: dict[str, str]) -> None:
    result = run_envwrap([*MODES[mode], "--", "sh", "-c", f"exit {code}"], env=base_env)
    assert result.returncode == code, result.stderr
    if mode == "watch":  # one line at start (docs/reference.md, "Messages"), no more
        assert result.stderr.startswith("envwrap: running sh with no secrets (no references); ")
        assert result.stderr.count("\n") == 1, result.stderr
    else:  # exec, and an init with no secret to speak of, say nothing (as dumb-init)
        assert result.stderr == ""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SIGNALS)
def test_death_by_signal_is_128_plus_n(
    mode: str, name: str, workdir: Path, base_env: dict[str, str]
) -> None:
    result = run_envwrap([*MODES[mode], "--", "sh", "-c", f"kill -{name} $$"], env=base_env)
    # exec mode: the program *is* envwrap's process, so the process itself dies
    # of the signal, which a shell reports as 128+N as well
    expected = 128 - SIGNALS[name] if mode == "exec" else SIGNALS[name]
    assert result.returncode == expected, result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_command_not_found_is_127(mode: str, workdir: Path, base_env: dict[str, str]) -> None:
    result = run_envwrap([*MODES[mode], "--", "no-such-program-xyz"], env=base_env)
    assert result.returncode == 127
    assert "no-such-program-xyz: command not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_not_executable_is_126(mode: str, workdir: Path, base_env: dict[str, str]) -> None:
    script = workdir / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = run_envwrap([*MODES[mode], "--", str(script)], env=base_env)
    assert result.returncode == 126
    assert "cannot execute" in result.stderr
    directory = run_envwrap([*MODES[mode], "--", str(workdir)], env=base_env)
    assert directory.returncode == 126


@pytest.mark.parametrize("mode", MODES)
def test_path_is_searched_in_the_childs_environment(
    mode: str, workdir: Path, base_env: dict[str, str]
) -> None:
    folder = workdir / "bin"
    folder.mkdir()
    program = folder / "hello-envwrap"
    program.write_text("#!/bin/sh\nexit 7\n")
    program.chmod(0o755)
    env = {**base_env, "PATH": f"{folder}:{base_env['PATH']}"}
    assert run_envwrap([*MODES[mode], "--", "hello-envwrap"], env=env).returncode == 7
