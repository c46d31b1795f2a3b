"""AWS Secrets Manager through the real CLI against a real moto server."""

from __future__ import annotations

import json
import time
from pathlib import Path

from testsupport.fixtures_aws import ACCOUNT, AwsProxy, MotoServer, aws_env, child_environment
from testsupport.helpers import assert_not_leaked, canary, run_envwrap
from testsupport.resolving import DEBUG, fail, resolve


def test_names_keys_pointers_and_whole_json(aws: MotoServer, base_env: dict[str, str]) -> None:
    password, token = canary("pw"), canary("token")
    document = {"user": "app", "password": password, "nested": {"token": token}}
    aws.sm.create_secret(Name="prod/db", SecretString=json.dumps(document))
    plain = canary("plain")
    aws.sm.create_secret(Name="plain", SecretString=plain)
    env = aws_env(
        base_env,
        aws,
        DB_PASSWORD="aws-sm://prod/db#password",
        DB_TOKEN="aws-sm://prod/db#/nested/token",
        DB_JSON="aws-sm://prod/db",
        PLAIN="ref+aws-sm://plain",
        DSN="postgres://${aws-sm://prod/db#user}:${aws-sm://prod/db#password}@db/app",
    )
    child = resolve(env, password, token, plain)
    assert child["DB_PASSWORD"] == password
    assert child["DB_TOKEN"] == token
    assert json.loads(child["DB_JSON"]) == document
    assert child["PLAIN"] == plain
    assert child["DSN"] == f"postgres://app:{password}@db/app"


def test_arn_forms(aws: MotoServer, base_env: dict[str, str]) -> None:
    value = canary()
    arn = aws.sm.create_secret(Name="svc/api", SecretString=json.dumps({"key": value}))["ARN"]
    partial = arn[: -len("-XXXXXX")]
    assert partial == f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:svc/api"
    env = aws_env(
        base_env,
        aws,
        FULL=f"{arn}#key",  # the form secrets-init writes
        PARTIAL=f"{partial}#key",
        SCHEME=f"aws-sm://{arn}#key",
        PREFIXED=f"ref+{arn}#key",
    )
    child = resolve(env, value)
    assert [child[n] for n in ("FULL", "PARTIAL", "SCHEME", "PREFIXED")] == [value] * 4


def test_region_of_an_arn_wins_and_region_parameter(
    aws: MotoServer, base_env: dict[str, str]
) -> None:
    eu, us = canary("eu"), canary("us")
    eu_client = aws.client("secretsmanager", region="eu-west-1")
    arn = eu_client.create_secret(Name="regional", SecretString=eu)["ARN"]
    aws.sm.create_secret(Name="regional", SecretString=us)  # same name, AWS_REGION's region
    env = aws_env(
        base_env,
        aws,
        FROM_ARN=arn,
        FROM_PARAM="aws-sm://regional?region=eu-west-1",
        DEFAULT="aws-sm://regional",
    )
    child = resolve(env, eu, us)
    assert (child["FROM_ARN"], child["FROM_PARAM"], child["DEFAULT"]) == (eu, eu, us)


def test_stages_and_version_id(aws: MotoServer, base_env: dict[str, str]) -> None:
    old, new, pending = canary("old"), canary("new"), canary("pending")
    first = aws.sm.create_secret(Name="jwt", SecretString=old)["VersionId"]
    aws.sm.put_secret_value(SecretId="jwt", SecretString=new)  # old becomes AWSPREVIOUS
    aws.sm.put_secret_value(SecretId="jwt", SecretString=pending, VersionStages=["AWSPENDING"])
    env = aws_env(
        base_env,
        aws,
        CURRENT="aws-sm://jwt",
        CURRENT_EXPLICIT="aws-sm://jwt?version-stage=AWSCURRENT",
        PREVIOUS="aws-sm://jwt?version-stage=AWSPREVIOUS",
        BY_ID=f"aws-sm://jwt?version-id={first}",
    )
    child = resolve(env, old, new, pending)
    assert child["CURRENT"] == new
    assert child["CURRENT_EXPLICIT"] == new
    assert child["PREVIOUS"] == old
    assert child["BY_ID"] == old
    assert pending not in child.values(), "AWSPENDING must be read only when asked for"
    env["PENDING"] = "aws-sm://jwt?version-stage=AWSPENDING"
    assert resolve(env, old, new, pending)["PENDING"] == pending


def test_check_shows_version_ids_not_values(aws: MotoServer, base_env: dict[str, str]) -> None:
    value = canary()
    version = aws.sm.create_secret(Name="app", SecretString=json.dumps({"k": value}))[
        "VersionId"
    ]
    env = aws_env(base_env, aws, K="aws-sm://app#k")
    result = run_envwrap(["check", *DEBUG], env=env)
    assert result.returncode == 0, result.stderr
    assert_not_leaked(value, result.stdout, result.stderr)
    assert version in result.stdout


def test_binary_secret_utf8_and_not(aws: MotoServer, workdir: Path, base_env: dict[str, str]) -> None:
    text = canary("bin")
    aws.sm.create_secret(Name="bin/text", SecretBinary=f"{text} é".encode())
    aws.sm.create_secret(Name="bin/raw", SecretBinary=b"\xff\xfe" + text.encode())
    child = resolve(aws_env(base_env, aws, BIN="aws-sm://bin/text"), text)
    assert child["BIN"] == f"{text} é"
    stderr = fail(aws_env(base_env, aws, RAW="aws-sm://bin/raw"), text, code=65, workdir=workdir)
    assert "RAW" in stderr and "aws-sm://bin/raw" in stderr
    assert "not UTF-8" in stderr


def test_missing_secret_names_the_variable(
    aws: MotoServer, workdir: Path, base_env: dict[str, str]
) -> None:
    value = canary()
    aws.sm.create_secret(Name="there", SecretString=value)
    env = aws_env(base_env, aws, GOOD="aws-sm://there", BAD="aws-sm://not-there")
    stderr = fail(env, value, code=65, workdir=workdir)
    assert "BAD: aws-sm://not-there" in stderr
    assert "ResourceNotFoundException" in stderr


def test_missing_stage_and_version(aws: MotoServer, workdir: Path, base_env: dict[str, str]) -> None:
    value = canary()
    aws.sm.create_secret(Name="once", SecretString=value)  # no AWSPREVIOUS yet
    env = aws_env(base_env, aws, OLD="aws-sm://once?version-stage=AWSPREVIOUS")
    assert "OLD" in fail(env, value, code=65, workdir=workdir)
    missing_id = "0" * 32
    env = aws_env(base_env, aws, OLD=f"aws-sm://once?version-id={missing_id}")
    assert "OLD" in fail(env, value, code=65, workdir=workdir)


def test_partial_batch_failure_starts_nothing(
    aws: MotoServer, aws_proxy: AwsProxy, workdir: Path, base_env: dict[str, str]
) -> None:
    values = [canary(f"v{i}") for i in range(3)]
    for i, value in enumerate(values):
        aws.sm.create_secret(Name=f"batch/{i}", SecretString=value)
    refs = {f"S{i}": f"aws-sm://batch/{i}" for i in range(3)}
    env = aws_env(base_env, aws, **refs, GONE="aws-sm://batch/gone",
                  AWS_ENDPOINT_URL=aws_proxy.endpoint)
    stderr = fail(env, *values, code=65, workdir=workdir)
    assert "GONE: aws-sm://batch/gone" in stderr
    # the one missing secret was reported by the batch itself: no extra calls
    assert aws_proxy.counts() == {"BatchGetSecretValue": 1}


def test_from_imports_a_json_secret(aws: MotoServer, base_env: dict[str, str]) -> None:
    user, password = canary("user"), canary("pw")
    aws.sm.create_secret(
        Name="app/env", SecretString=json.dumps({"APP_USER": user, "APP_PASSWORD": password})
    )
    child = resolve(aws_env(base_env, aws), user, password, args=("--from", "aws-sm://app/env"))
    assert (child["APP_USER"], child["APP_PASSWORD"]) == (user, password)


def test_batches_of_twenty(aws: MotoServer, aws_proxy: AwsProxy, base_env: dict[str, str]) -> None:
    values = {f"S{i:02}": canary(f"s{i}") for i in range(25)}
    for name, value in values.items():
        aws.sm.create_secret(Name=f"many/{name}", SecretString=value)
    refs = {name: f"aws-sm://many/{name}" for name in values}
    refs["PREV"] = "aws-sm://many/S00?version-stage=AWSCURRENT"  # explicit default: batchable
    env = aws_env(base_env, aws, **refs, AWS_ENDPOINT_URL=aws_proxy.endpoint)
    child = resolve(env, *values.values())
    assert {name: child[name] for name in values} == values
    assert child["PREV"] == values["S00"]
    assert aws_proxy.counts() == {"BatchGetSecretValue": 2}  # ceil(26 / 20)


def test_explicit_versions_are_read_one_by_one(
    aws: MotoServer, aws_proxy: AwsProxy, base_env: dict[str, str]
) -> None:
    old, new = canary("old"), canary("new")
    aws.sm.create_secret(Name="rot", SecretString=old)
    aws.sm.put_secret_value(SecretId="rot", SecretString=new)
    env = aws_env(base_env, aws, NEW="aws-sm://rot", OLD="aws-sm://rot?version-stage=AWSPREVIOUS",
                  AWS_ENDPOINT_URL=aws_proxy.endpoint)
    child = resolve(env, old, new)
    assert (child["NEW"], child["OLD"]) == (new, old)
    assert aws_proxy.counts() == {"BatchGetSecretValue": 1, "GetSecretValue": 1}


def test_denied_batch_falls_back_to_one_call_per_secret(
    aws: MotoServer, aws_proxy: AwsProxy, base_env: dict[str, str]
) -> None:
    values = {f"S{i}": canary(f"s{i}") for i in range(3)}
    for name, value in values.items():
        aws.sm.create_secret(Name=name, SecretString=value)
    aws_proxy.faults["BatchGetSecretValue"] = (400, "AccessDeniedException", None)
    env = aws_env(base_env, aws, **{n: f"aws-sm://{n}" for n in values},
                  AWS_ENDPOINT_URL=aws_proxy.endpoint)
    child = resolve(env, *values.values())
    assert {n: child[n] for n in values} == values
    assert aws_proxy.counts() == {"BatchGetSecretValue": 1, "GetSecretValue": 3}


def test_iam_policy_without_batch_permission(aws: MotoServer, base_env: dict[str, str]) -> None:
    """moto enforcing IAM: a user allowed GetSecretValue only still gets its secrets."""
    values = {f"S{i}": canary(f"s{i}") for i in range(2)}
    for name, value in values.items():
        aws.sm.create_secret(Name=name, SecretString=value)
    key = _user_with_policy(aws, ["secretsmanager:GetSecretValue"])
    aws.enforce_auth()
    env = aws_env(base_env, aws, **{n: f"aws-sm://{n}" for n in values}, **key)
    child = resolve(env, *values.values())
    assert {n: child[n] for n in values} == values


def test_iam_denied_and_bad_credentials_exit_77(
    aws: MotoServer, workdir: Path, base_env: dict[str, str]
) -> None:
    value = canary()
    aws.sm.create_secret(Name="locked", SecretString=value)
    key = _user_with_policy(aws, ["ssm:GetParameter"])  # nothing for Secrets Manager
    aws.enforce_auth()
    env = aws_env(base_env, aws, LOCKED="aws-sm://locked", **key)
    assert "LOCKED: aws-sm://locked" in fail(env, value, code=77, workdir=workdir)
    env.update(AWS_ACCESS_KEY_ID="AKIAUNKNOWNKEY000000", AWS_SECRET_ACCESS_KEY="wrong")
    assert "LOCKED" in fail(env, value, code=77, workdir=workdir)


def _user_with_policy(aws: MotoServer, actions: list[str]) -> dict[str, str]:
    aws.iam.create_user(UserName="app")
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    aws.iam.put_user_policy(UserName="app", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = aws.iam.create_access_key(UserName="app")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_endpoint_down_exits_69_after_start_timeout(
    base_env: dict[str, str], workdir: Path, moto_server: MotoServer
) -> None:
    from testsupport.fixtures_aws import free_port

    env = aws_env(base_env, moto_server, DB="aws-sm://prod/db",
                  AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    stderr = fail(env, code=69, args=("--start-timeout", "1s"), workdir=workdir)
    assert time.monotonic() - started < 15
    assert "DB: aws-sm://prod/db" in stderr
    assert "EndpointConnectionError" in stderr


def test_throttling_is_retried(aws: MotoServer, aws_proxy: AwsProxy, base_env: dict[str, str]) -> None:
    value = canary()
    aws.sm.create_secret(Name="busy", SecretString=value)
    # botocore tries twice, then the resolver backs off and tries again
    aws_proxy.faults["BatchGetSecretValue"] = (400, "ThrottlingException", 2)
    env = aws_env(base_env, aws, BUSY="aws-sm://busy", AWS_ENDPOINT_URL=aws_proxy.endpoint)
    assert resolve(env, value, args=("--start-timeout", "20s"))["BUSY"] == value
    assert aws_proxy.count("BatchGetSecretValue") == 3


def test_server_errors_exit_69(
    aws: MotoServer, aws_proxy: AwsProxy, workdir: Path, base_env: dict[str, str]
) -> None:
    value = canary()
    aws.sm.create_secret(Name="broken", SecretString=value)
    aws_proxy.faults["BatchGetSecretValue"] = (503, "ServiceUnavailableException", None)
    env = aws_env(base_env, aws, B="aws-sm://broken", AWS_ENDPOINT_URL=aws_proxy.endpoint)
    stderr = fail(env, value, code=69, args=("--start-timeout", "1s"), workdir=workdir)
    assert "ServiceUnavailableException" in stderr
    assert aws_proxy.count("BatchGetSecretValue") >= 2  # retried


def test_missing_region_is_a_config_error(
    moto_server: MotoServer, workdir: Path, base_env: dict[str, str]
) -> None:
    env = aws_env(base_env, moto_server, DB="aws-sm://prod/db")
    del env["AWS_REGION"], env["AWS_DEFAULT_REGION"]
    stderr = fail(env, code=78, workdir=workdir)
    assert "DB: aws-sm://prod/db" in stderr
    assert "AWS_REGION" in stderr and "?region=" in stderr


def test_no_credentials_exit_77(
    moto_server: MotoServer, workdir: Path, base_env: dict[str, str]
) -> None:
    env = aws_env(base_env, moto_server, DB="aws-sm://prod/db")
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    stderr = fail(env, code=77, workdir=workdir)
    assert "DB: aws-sm://prod/db" in stderr and "NoCredentialsError" in stderr


def test_aws_settings_from_a_dotenv_file(
    aws: MotoServer, workdir: Path, base_env: dict[str, str]
) -> None:
    value = canary()
    aws.sm.create_secret(Name="dotenv", SecretString=value)
    settings = "".join(f"{k}={v}\n" for k, v in aws.env.items())
    (workdir / ".env").write_text(settings + "FROM_DOTENV=aws-sm://dotenv\n")
    result = run_envwrap(["--log-level", "debug", "--", "env", "-0"], env=base_env, cwd=workdir)
    assert_not_leaked(value, result.stderr)
    assert result.returncode == 0, result.stderr
    assert child_environment(result.stdout)["FROM_DOTENV"] == value
