"""``--scrub-env GLOB`` removes more names from the program's environment.

AWS credentials reach the program by default (it may use AWS itself); a
deployment where they are there only for envwrap says ``--scrub-env 'AWS_*'``.
envwrap still uses them to read the secret. Against moto, through the real command.
"""

from __future__ import annotations

from testsupport.fixtures_aws import MotoServer, aws_env, child_environment
from testsupport.helpers import assert_not_leaked, canary, run_envwrap

ARGS = ["--no-env-file", "--log-level", "debug"]


def test_aws_credentials_pass_by_default_and_scrub_env_removes_them(
    aws: MotoServer, base_env: dict[str, str]
) -> None:
    value = canary()
    aws.sm.create_secret(Name="scrub/db", SecretString=value)
    env = aws_env(base_env, aws, AWS_SESSION_TOKEN="session", DB_PASSWORD="aws-sm://scrub/db",
                  DEBUG_FLAGS="x", DEBUGGER="kept")
    passed = run_envwrap([*ARGS, "--", "env", "-0"], env=env)
    assert passed.returncode == 0, passed.stderr
    assert child_environment(passed.stdout)["AWS_ACCESS_KEY_ID"] == "testing"

    scrubbed = run_envwrap([*ARGS, "--scrub-env", "AWS_*", "--scrub-env", "DEBUG_*",
                            "--", "env", "-0"], env=env)
    assert scrubbed.returncode == 0, scrubbed.stderr
    child = child_environment(scrubbed.stdout)
    assert child["DB_PASSWORD"] == value  # read with the credentials the program no longer has
    assert not [name for name in child if name.startswith(("AWS_", "DEBUG_"))]
    assert child["DEBUGGER"] == "kept"
    for result in (passed, scrubbed):
        assert_not_leaked(value, result.stderr)


def test_scrub_env_from_the_environment_and_pass_env_keeps_a_name(
    aws: MotoServer, base_env: dict[str, str]
) -> None:
    value = canary()
    aws.sm.create_secret(Name="scrub/api", SecretString=value)
    env = aws_env(base_env, aws, API_KEY="aws-sm://scrub/api",
                  ENVWRAP_SCRUB_ENV="AWS_*,API_*")
    result = run_envwrap([*ARGS, "--pass-env", "AWS_REGION", "--", "env", "-0"], env=env)
    assert result.returncode == 0, result.stderr
    child = child_environment(result.stdout)
    assert "API_KEY" not in child  # a resolved variable may be scrubbed too
    assert [name for name in child if name.startswith("AWS_")] == ["AWS_REGION"]
    assert_not_leaked(value, result.stderr, result.stdout)
