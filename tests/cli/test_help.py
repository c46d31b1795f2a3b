"""Help on every command, typos caught with a suggestion, completion scripts that parse."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testsupport.helpers import run_envwrap

COMMANDS = ["run", "check", "export", "sidecar", "webhook", "install", "import", "completion"]
#: an option each command must show, and one it must not
SHOWN = {"run": ("--watch", "--format"), "check": ("--format", "--watch"),
         "export": ("--format", "--render"), "sidecar": ("--target-name", "--on-change"),
         "webhook": ("--tls-cert", "--env-file"), "install": ("--log-level", "--from"),
         "import": ("--dry-run", "--watch"), "completion": ("", "--log-level")}


def assert_fits_a_terminal(page: str) -> None:
    lines = page.splitlines()
    assert len(lines) <= 60, len(lines)
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_its_own_help_page(
    command: str, flag: str, workdir: Path, base_env: dict[str, str]
) -> None:
    result = run_envwrap([command, flag], env=base_env)
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith(f"usage: envwrap {command}" if command != "run" else "usage: envwrap")
    assert_fits_a_terminal(page)
    examples = page.split("Examples:\n", 1)[1].split("\n\n", 1)[0]
    assert f"envwrap {'' if command == 'run' else command}".strip() in examples
    shown, hidden = SHOWN[command]
    assert shown in page and f"  {hidden} " not in page
    assert "\nOther:" not in page  # every option sits in a named group
    if command == "run":
        for group in ("Sources:", "Stores:", "Supervision:", "Rotation:", "Handoff:", "Hygiene:",
                      "Telemetry:"):
            assert group in page
    assert run_envwrap(["help", command], env=base_env).stdout == page


def test_the_overview_names_every_command_and_shows_examples(
    workdir: Path, base_env: dict[str, str]
) -> None:
    for args in (["--help"], ["-h"], ["help"]):
        result = run_envwrap(args, env=base_env)
        assert result.returncode == 0
        assert_fits_a_terminal(result.stdout)
        for command in COMMANDS:
            assert f"\n         {command} " in result.stdout, command
        assert "envwrap -- node server.js" in result.stdout
        assert "ENVWRAP_ENV_FILE" in result.stdout
    bare = run_envwrap([], env=base_env)
    assert bare.returncode == 64 and "usage: envwrap" in bare.stderr
    unknown = run_envwrap(["help", "chek"], env=base_env)
    assert unknown.returncode == 64 and "check" in unknown.stderr


def test_help_belongs_to_the_program_after_its_name(workdir: Path, base_env: dict[str, str]) -> None:
    after_dashes = run_envwrap(["--", "sh", "-c", 'echo "$1"', "sh", "--help"], env=base_env)
    assert after_dashes.returncode == 0 and after_dashes.stdout == "--help\n"
    bare_program = run_envwrap(["sh", "-c", 'echo "$1"', "sh", "--help"], env=base_env)
    assert bare_program.returncode == 0 and bare_program.stdout == "--help\n"
    run_form = run_envwrap(["run", "--", "echo", "ran"], env=base_env)
    assert run_form.returncode == 0 and run_form.stdout == "ran\n"


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["--watc", "--", "true"], "did you mean --watch?"),
        (["--intreval", "5s", "--", "true"], "did you mean --interval?"),
        (["check", "--fromat", "json"], "did you mean --format?"),
        (["import", "--dryrun"], "did you mean --dry-run?"),
        (["sidecar", "--target-nmae", "x"], "did you mean --target-name?"),
    ],
)
def test_a_mistyped_option_exits_64_with_the_nearest(
    args: list[str], suggestion: str, workdir: Path, base_env: dict[str, str]
) -> None:
    result = run_envwrap(args, env=base_env)
    assert result.returncode == 64
    assert suggestion in result.stderr and "Traceback" not in result.stderr


def test_an_option_of_another_command_is_refused_with_its_help(
    workdir: Path, base_env: dict[str, str]
) -> None:
    result = run_envwrap(["check", "--watch"], env=base_env)
    assert result.returncode == 64
    assert "--watch does not apply to 'envwrap check'" in result.stderr
    assert "envwrap check --help" in result.stderr
    wrong_format = run_envwrap(["check", "--format", "dotenv"], env=base_env)
    assert wrong_format.returncode == 78 and "table, json" in wrong_format.stderr


# --- completion ---------------------------------------------------------------------------

SHELL_CHECKS = {"bash": ["bash", "-n"], "zsh": ["zsh", "-n"], "fish": ["fish", "--no-execute"]}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_pass_the_shells_syntax_check(
    shell: str, workdir: Path, base_env: dict[str, str]
) -> None:
    if shutil.which(shell) is None:  # scripts/setup.sh installs zsh and fish when root
        pytest.fail(f"{shell} is not installed: run scripts/setup.sh")
    result = run_envwrap(["completion", shell], env=base_env)
    assert result.returncode == 0, result.stderr
    script = workdir / f"envwrap.{shell}"
    script.write_text(result.stdout)
    check = subprocess.run([*SHELL_CHECKS[shell], str(script)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stderr
    assert "on-change" in result.stdout and "dry-run" in result.stdout


def test_fish_completion_offers_each_commands_own_options(
    workdir: Path, base_env: dict[str, str]
) -> None:
    script = workdir / "envwrap.fish"
    script.write_text(run_envwrap(["completion", "fish"], env=base_env).stdout)

    def complete(line: str) -> list[str]:
        result = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        return [row.split("\t")[0] for row in result.stdout.splitlines()]

    assert complete("envwrap --wat") == ["--watch"]
    assert complete("envwrap check --wat") == []
    assert complete("envwrap check --form") == ["--format"]
    assert sorted(complete("envwrap check --format ")) == ["json", "table"]
    assert sorted(complete("envwrap export --format ")) == ["dotenv", "json", "shell"]
    assert complete("envwrap --on-change h") == ["handoff"]


def complete_in_bash(script: Path, words: list[str]) -> list[str]:
    """What the bash function offers for ``words`` (the last one being completed)."""
    quoted = " ".join(f"'{word}'" for word in words)
    program = (f"source {script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
               "_envwrap; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=False,
                            env={"PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completion_offers_each_commands_own_options(
    workdir: Path, base_env: dict[str, str]
) -> None:
    script = workdir / "envwrap.bash"
    script.write_text(run_envwrap(["completion", "bash"], env=base_env).stdout)
    assert complete_in_bash(script, ["envwrap", "ch"]) == ["check"]
    assert complete_in_bash(script, ["envwrap", "--wat"]) == ["--watch"]
    assert complete_in_bash(script, ["envwrap", "check", "--wat"]) == []
    assert complete_in_bash(script, ["envwrap", "import", "--dr"]) == ["--dry-run"]
    assert complete_in_bash(script, ["envwrap", "--on-change", "h"]) == ["handoff"]
    assert complete_in_bash(script, ["envwrap", "completion", "z"]) == ["zsh"]
    assert "--from" in complete_in_bash(script, ["envwrap", "check", "--"])
    assert complete_in_bash(script, ["envwrap", "check", "--format", ""]) == ["table", "json"]
    assert complete_in_bash(script, ["envwrap", "export", "--format", "s"]) == ["shell"]


def test_completion_needs_a_known_shell(workdir: Path, base_env: dict[str, str]) -> None:
    assert run_envwrap(["completion", "tcsh"], env=base_env).returncode == 64
    assert run_envwrap(["completion"], env=base_env).returncode == 64


def test_a_mistyped_command_names_the_one_meant(workdir: Path, base_env: dict[str, str]) -> None:
    typo = run_envwrap(["chek"], env=base_env)
    assert typo.returncode == 127 and "did you mean 'envwrap check'?" in typo.stderr
    deliberate = run_envwrap(["--", "chek"], env=base_env)
    assert deliberate.returncode == 127 and "did you mean" not in deliberate.stderr
