"""AWS SSM Parameter Store through the real CLI against a real moto server."""

from __future__ import annotations

import json
from pathlib import Path

from testsupport.fixtures_aws import ACCOUNT, AwsProxy, MotoServer, aws_env
from testsupport.helpers import assert_not_leaked, canary, run_envwrap
from testsupport.resolving import DEBUG, fail, resolve


def test_types_names_and_arns(aws: MotoServer, base_env: dict[str, str]) -> None:
    secure, plain = canary("secure"), canary("plain")
    listed = f"{canary('a')},{canary('b')}"
    aws.ssm.put_parameter(Name="/prod/db/password", Value=secure, Type="SecureString")
    aws.ssm.put_parameter(Name="flat", Value=plain, Type="String")
    aws.ssm.put_parameter(Name="/prod/hosts", Value=listed, Type="StringList")
    arn = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/prod/db/password"
    env = aws_env(
        base_env,
        aws,
        SECURE="aws-ssm:///prod/db/password",
        PLAIN="aws-ssm://flat",
        LISTED="ref+aws-ssm:///prod/hosts",
        BY_ARN=arn,
        INLINE="pw=${aws-ssm:///prod/db/password};",
    )
    child = resolve(env, secure, plain, *listed.split(","))
    assert child["SECURE"] == secure  # decrypted
    assert child["PLAIN"] == plain
    assert child["LISTED"] == listed
    assert child["BY_ARN"] == secure
    assert child["INLINE"] == f"pw={secure};"


def test_json_parameter_key_and_from(aws: MotoServer, base_env: dict[str, str]) -> None:
    user = canary("user")
    aws.ssm.put_parameter(Name="/app/env", Value=json.dumps({"APP_USER": user}),
                          Type="SecureString")
    env = aws_env(base_env, aws, USER_KEY="aws-ssm:///app/env#APP_USER")
    child = resolve(env, user, args=("--from", "aws-ssm:///app/env"))
    assert child["USER_KEY"] == child["APP_USER"] == user


def test_region_of_an_arn_wins_and_region_parameter(
    aws: MotoServer, base_env: dict[str, str]
) -> None:
    eu, us = canary("eu"), canary("us")
    aws.client("ssm", region="eu-west-1").put_parameter(Name="/r", Value=eu, Type="String")
    aws.ssm.put_parameter(Name="/r", Value=us, Type="String")
    env = aws_env(
        base_env,
        aws,
        FROM_ARN=f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter/r",
        FROM_PARAM="aws-ssm:///r?region=eu-west-1",
        DEFAULT="aws-ssm:///r",
    )
    child = resolve(env, eu, us)
    assert (child["FROM_ARN"], child["FROM_PARAM"], child["DEFAULT"]) == (eu, eu, us)


def test_check_shows_the_version(aws: MotoServer, base_env: dict[str, str]) -> None:
    first, second = canary("1"), canary("2")
    aws.ssm.put_parameter(Name="/v", Value=first, Type="SecureString")
    aws.ssm.put_parameter(Name="/v", Value=second, Type="SecureString", Overwrite=True)
    result = run_envwrap(["check", *DEBUG], env=aws_env(base_env, aws, V="aws-ssm:///v"))
    assert result.returncode == 0, result.stderr
    assert_not_leaked(first, result.stdout, result.stderr)
    assert_not_leaked(second, result.stdout, result.stderr)
    assert result.stdout.splitlines()[1].split()[-1] == "2"


def test_partial_batch_failure_names_the_variable(
    aws: MotoServer, aws_proxy: AwsProxy, workdir: Path, base_env: dict[str, str]
) -> None:
    value = canary()
    aws.ssm.put_parameter(Name="/here", Value=value, Type="SecureString")
    env = aws_env(base_env, aws, HERE="aws-ssm:///here", GONE="aws-ssm:///gone",
                  AWS_ENDPOINT_URL=aws_proxy.endpoint)
    stderr = fail(env, value, code=65, workdir=workdir)
    assert "GONE: aws-ssm:///gone" in stderr and "ParameterNotFound" in stderr
    assert aws_proxy.counts() == {"GetParameters": 1}


def test_batches_of_ten(aws: MotoServer, aws_proxy: AwsProxy, base_env: dict[str, str]) -> None:
    values = {f"P{i:02}": canary(f"p{i}") for i in range(15)}
    for name, value in values.items():
        aws.ssm.put_parameter(Name=f"/many/{name}", Value=value, Type="SecureString")
    env = aws_env(base_env, aws, **{n: f"aws-ssm:///many/{n}" for n in values},
                  AWS_ENDPOINT_URL=aws_proxy.endpoint)
    child = resolve(env, *values.values())
    assert {n: child[n] for n in values} == values
    assert aws_proxy.counts() == {"GetParameters": 2}


def test_denied_batch_falls_back_to_get_parameter(
    aws: MotoServer, aws_proxy: AwsProxy, base_env: dict[str, str]
) -> None:
    values = {f"P{i}": canary(f"p{i}") for i in range(3)}
    for name, value in values.items():
        aws.ssm.put_parameter(Name=f"/{name}", Value=value, Type="SecureString")
    aws_proxy.faults["GetParameters"] = (400, "AccessDeniedException", None)
    env = aws_env(base_env, aws, **{n: f"aws-ssm:///{n}" for n in values},
                  AWS_ENDPOINT_URL=aws_proxy.endpoint)
    child = resolve(env, *values.values())
    assert {n: child[n] for n in values} == values
    assert aws_proxy.counts() == {"GetParameters": 1, "GetParameter": 3}


def test_name_with_slash_must_be_absolute(
    aws: MotoServer, workdir: Path, base_env: dict[str, str]
) -> None:
    stderr = fail(aws_env(base_env, aws, P="aws-ssm://prod/db"), code=64, workdir=workdir)
    assert "P: aws-ssm://prod/db" in stderr and "aws-ssm:///prod/db" in stderr


def test_endpoint_down_exits_69(
    moto_server: MotoServer, workdir: Path, base_env: dict[str, str]
) -> None:
    from testsupport.fixtures_aws import free_port

    env = aws_env(base_env, moto_server, P="aws-ssm:///p",
                  AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    stderr = fail(env, code=69, args=("--start-timeout", "1s"), workdir=workdir)
    assert "P: aws-ssm:///p" in stderr
