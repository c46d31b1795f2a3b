"""Property-based fuzz of the reference grammar and of ``.env`` parsing: whatever the
input, the only exceptions are envwrap's own errors (an exit code, a message)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envwrap.environment import parse_templates, warn_near_misses
from envwrap.errors import EnvwrapError
from envwrap.near_miss import likely_reference
from envwrap.refs import parse_reference, parse_value
from envwrap.sources import load_dotenv_files

PIECES = st.sampled_from([
    "vault://", "ref+", "aws-sm://", "aws-ssm://", "arn:aws:secretsmanager:", "arn:aws:ssm:",
    "file://", "ref+file://", "${", "}", "#", "#/", "~", "~0", "?", "&", "=", "version=",
    "version-stage=", "region=", "/", "..", ".", ":", "secret", "app", " ", "\t", "\x00", "é",
    "%2F", "-1", "AWSPREVIOUS", ":-", "$", "'", '"', "\\", "\n",
])
REFERENCE_LIKE = st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=25).map("".join)


@settings(max_examples=1500, deadline=None)
@given(REFERENCE_LIKE)
def test_the_grammar_raises_only_envwrap_errors(text: str) -> None:
    for parse in (parse_value, parse_reference):
        try:
            parse(text)
        except EnvwrapError as err:
            assert err.exit_code == 64
            assert "Traceback" not in str(err)
    likely_reference(text)  # never raises


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), REFERENCE_LIKE, max_size=6))
def test_an_environment_raises_only_envwrap_errors_naming_the_variable(
    environment: dict[str, str],
) -> None:
    try:
        templates = parse_templates(environment)
    except EnvwrapError as err:
        assert err.variable in environment
        return
    warn_near_misses(environment, templates)


DOTENV_PIECES = st.sampled_from([
    "A", "B_1", "export ", "=", "'", '"', "\\", "\\'", '\\"', "${A}", "${B_1:-x}", "${", "}",
    "#", " #", "\n", "\r\n", "\t", " ", "é", "\x00", "vault://secret/x", "$", "`", ":", "-",
])
DOTENV_TEXT = st.lists(st.one_of(DOTENV_PIECES, st.text(max_size=3)), max_size=40).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(DOTENV_TEXT, min_size=1, max_size=3))
def test_dotenv_files_raise_only_envwrap_errors_naming_the_file(
    tmp_path: Path, texts: list[str]
) -> None:
    paths = []
    for index, text in enumerate(texts):
        path = tmp_path / f"{index}.env"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        paths.append(str(path))
    try:
        values = load_dotenv_files(paths, {"HOME": "/root"})
    except EnvwrapError as err:
        assert err.exit_code == 78
        assert any(path in str(err) for path in paths)
        return
    assert all(isinstance(v, str) for v in values.values())
