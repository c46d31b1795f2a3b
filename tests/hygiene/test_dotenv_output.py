"""dotenv files envwrap writes (``--render``, ``export``) are safe to source in a POSIX
shell and read back exactly by python-dotenv; what cannot be is refused, never mangled."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envwrap.errors import InvalidValueError
from envwrap.render import format_environment
from testsupport.helpers import run_envwrap

# every character a shell or python-dotenv treats specially, and ordinary ones
SPECIAL = "'\"\\$`{}#;|&<>()*?[]~!%^ =\n\t:-"
TEXT = st.text(alphabet=st.sampled_from(SPECIAL + "abcXYZ019é"), max_size=24)


def read_back_by_shell(path: Path, names: list[str]) -> list[str]:
    script = f'set -a; . "{path}"; ' + "; ".join(f'printf "%s\\0" "${name}"' for name in names)
    done = subprocess.run(["sh", "-c", script], capture_output=True, env={"PATH": "/usr/bin:/bin"},
                          check=True, timeout=30)
    return done.stdout.decode().split("\0")[:-1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT, min_size=1, max_size=20))
def test_every_written_value_reads_back_exactly_in_sh_and_python_dotenv(
    tmp_path_factory: pytest.TempPathFactory, values: list[str]
) -> None:
    writable = {}
    for index, value in enumerate(values):
        try:
            format_environment({"V": value}, "dotenv")
        except InvalidValueError:
            assert any(c in value for c in "'\\") or "${" in value
            assert any(c in value for c in "$`")
            continue
        writable[f"V{index}"] = value
    if not writable:
        return
    path = tmp_path_factory.mktemp("dotenv") / "out.env"
    text = format_environment(writable, "dotenv")
    path.write_text(text)
    assert dict(dotenv_values(stream=io.StringIO(text))) == writable
    assert read_back_by_shell(path, list(writable)) == list(writable.values())


def test_a_value_that_would_run_a_command_in_a_shell_does_not(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    """The red-team's value: with ``\\'`` inside single quotes a shell ends the quote early."""
    marker = tmp_path / "pwned"
    value = f"x'; touch {marker} #"
    text = format_environment({"V": value}, "dotenv")
    (tmp_path / "out.env").write_text(text)
    assert read_back_by_shell(tmp_path / "out.env", ["V"]) == [value]
    assert not marker.exists()
    assert dotenv_values(stream=io.StringIO(text))["V"] == value


def test_export_refuses_a_value_it_cannot_write_naming_the_variable(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("it's $100`")
    env = {**base_env, "DB_PASSWORD": f"ref+file://{secret}"}
    result = run_envwrap(["export", "--no-env-file"], env=env, cwd=tmp_path)
    assert result.returncode == 65
    assert "DB_PASSWORD" in result.stderr and "json" in result.stderr.lower()
    assert "it's" not in result.stderr and "Traceback" not in result.stderr
    as_json = run_envwrap(["export", "--no-env-file", "--format", "json"], env=env, cwd=tmp_path)
    assert as_json.returncode == 0 and "$100" in as_json.stdout
