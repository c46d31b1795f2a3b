"""Reference grammar: unit tests and a hypothesis fuzz of the pure parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envwrap.errors import ReferenceSyntaxError
from envwrap.refs import Locator, Reference, parse_reference, parse_value


def ref(text: str) -> Reference:
    parsed = parse_reference(text)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("text", "scheme", "path", "params", "key"),
    [
        ("vault://secret/app/db#password", "vault", "secret/app/db", (), "password"),
        ("ref+vault://secret/app/db#password", "vault", "secret/app/db", (), "password"),
        ("vault://secret/app?version=-1", "vault", "secret/app", (("version", "-1"),), None),
        ("vault://secret/app#/a/b~1c", "vault", "secret/app", (), "/a/b~1c"),
        ("vault://database/creds/ro", "vault", "database/creds/ro", (), None),
        ("aws-sm://prod/db#password", "aws-sm", "prod/db", (), "password"),
        (
            "aws-sm://prod/jwt?version-stage=AWSPREVIOUS&region=eu-west-1",
            "aws-sm",
            "prod/jwt",
            (("region", "eu-west-1"), ("version-stage", "AWSPREVIOUS")),
            None,
        ),
        ("aws-ssm:///prod/db/password", "aws-ssm", "/prod/db/password", (), None),
        ("aws-ssm://plain?region=us-west-2", "aws-ssm", "plain", (("region", "us-west-2"),), None),
        ("ref+file:///var/run/secrets/db/password", "file", "/var/run/secrets/db/password", (), None),
        ("ref+file:///etc/app.json#user", "file", "/etc/app.json", (), "user"),
        ("ref+gcp://projects/p/secrets/s", "gcp", "projects/p/secrets/s", (), None),
    ],
)
def test_parses_every_form(
    text: str, scheme: str, path: str, params: tuple[tuple[str, str], ...], key: str | None
) -> None:
    parsed = ref(text)
    assert parsed.locator == Locator(scheme, path, params)
    assert parsed.key == key
    assert parsed.text == text


def test_secretsmanager_arn_takes_its_region() -> None:
    arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:prod/db-AbCdEf"
    parsed = ref(arn + "#password")
    assert parsed.locator.scheme == "aws-sm"
    assert parsed.locator.path == arn
    assert parsed.locator.param("region") == "eu-central-1"
    assert parsed.key == "password"
    assert ref("ref+" + arn).locator == parsed.locator


def test_ssm_arn_and_other_arns() -> None:
    arn = "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db/password"
    assert ref(arn).locator == Locator("aws-ssm", arn, (("region", "us-east-1"),))
    assert parse_reference("arn:aws:iam::123456789012:role/app") is None
    assert parse_reference("arn:aws:ssm:us-east-1:1:document/x") is None
    with pytest.raises(ReferenceSyntaxError):
        parse_reference(arn + "?region=eu-west-1")


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "",
        "file:///etc/passwd",
        "https://example.com/${x}",
        "redis://localhost:6379",
        "postgresql://user:password@localhost:5432/workflows",
        "${HOME}/x",
        "vaults://x",
        "memory://x",
    ],
)
def test_ordinary_values_are_left_alone(value: str) -> None:
    assert parse_value(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "vault://",
        "vault:///secret/x",
        "vault://secret/x#",
        "vault://secret/x?version=abc",
        "vault://secret/x?bogus=1",
        "vault://secret/x?version=1&version=2",
        "vault://secret/x?version",
        "aws-sm://x?version-stage=A&version-id=B",
        "ref+file://relative/path",
        "ref+file:///x#/bad~2pointer",
        "vault://secret/with space",
        "ref+nothing",
        "x${vault://secret/a#b",
        "arn:aws:secretsmanager::1:secret:x",
    ],
)
def test_malformed_references_are_usage_errors(value: str) -> None:
    with pytest.raises(ReferenceSyntaxError) as caught:
        parse_value(value)
    assert caught.value.exit_code == 64


def test_inline_references() -> None:
    template = parse_value(
        "postgres://${vault://secret/db#user}:${vault://secret/db#password}@db/app"
    )
    assert template is not None
    parts = template.parts
    assert parts[0] == "postgres://"
    assert isinstance(parts[1], Reference) and parts[1].key == "user"
    assert parts[2] == ":"
    assert isinstance(parts[3], Reference) and parts[3].key == "password"
    assert parts[4] == "@db/app"
    assert not template.is_whole
    assert {r.locator for r in template.references} == {Locator("vault", "secret/db")}


def test_inline_ignores_other_braces() -> None:
    template = parse_value("${HOME}-${ref+file:///k}-${arn:aws:iam::1:role/x}")
    assert template is not None
    assert template.parts[0] == "${HOME}-"
    assert isinstance(template.parts[1], Reference)
    assert template.parts[2] == "-${arn:aws:iam::1:role/x}"


_alphabet = st.sampled_from(
    [*"abcXYZ019/#?&=:+-_.~${} \t\n\x00", "vault://", "aws-sm://", "aws-ssm://",
     "ref+", "file://", "arn:aws:secretsmanager:us-east-1:1:secret:", "arn:aws:ssm:r:1:parameter/",
     "${", "?version=", "#/", "version-stage=", "region="]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_alphabet, max_size=30).map("".join))
def test_fuzz_parse_value_never_crashes(value: str) -> None:
    try:
        result = parse_value(value)
    except ReferenceSyntaxError as err:
        assert err.exit_code == 64
        return
    if result is not None:
        rebuilt = "".join(p if isinstance(p, str) else p.text for p in result.parts)
        assert rebuilt.replace("${", "").replace("}", "") == value.replace("${", "").replace(
            "}", ""
        )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_arbitrary_text(value: str) -> None:
    try:
        parse_value(value)
    except ReferenceSyntaxError as err:
        assert err.exit_code == 64
