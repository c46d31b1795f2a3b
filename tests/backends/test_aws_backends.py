"""The AWS backend classes used directly: probes, versions, clients, call counts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from envwrap.backends import Fetched
from envwrap.backends.aws_sm import SecretsManagerBackend
from envwrap.backends.aws_ssm import ParameterStoreBackend
from envwrap.errors import ConfigError, EnvwrapError, NotFoundError
from envwrap.refs import Locator, parse_reference
from testsupport.fixtures_aws import MotoServer


def loc(text: str) -> Locator:
    ref = parse_reference(text)
    assert ref is not None
    return ref.locator


class Calls:
    """Counts API calls by operation name with a botocore event hook."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def hook(self, model: Any, **_: Any) -> None:
        self.names.append(model.name)


@pytest.fixture
def sm(aws: MotoServer) -> Iterator[tuple[SecretsManagerBackend, Calls]]:
    # the moto settings are not in os.environ: they reach boto3 the .env way
    backend = SecretsManagerBackend(aws.env)
    calls = Calls()
    backend._clients.client("us-east-1").meta.events.register("before-call.*.*", calls.hook)
    yield backend, calls
    backend.close()


@pytest.fixture
def ssm(aws: MotoServer) -> Iterator[tuple[ParameterStoreBackend, Calls]]:
    backend = ParameterStoreBackend(aws.env)
    calls = Calls()
    backend._clients.client("us-east-1").meta.events.register("before-call.*.*", calls.hook)
    yield backend, calls
    backend.close()


def test_sm_versions_and_probe(aws: MotoServer, sm: tuple[SecretsManagerBackend, Calls]) -> None:
    backend, calls = sm
    first = aws.sm.create_secret(Name="rot", SecretString="one")["VersionId"]
    second = aws.sm.put_secret_value(SecretId="rot", SecretString="two")["VersionId"]
    current, previous = loc("aws-sm://rot"), loc("aws-sm://rot?version-stage=AWSPREVIOUS")
    results = backend.read_many([current, previous])
    assert all(isinstance(r, Fetched) for r in results)
    assert [(r.data, r.version) for r in results if isinstance(r, Fetched)] == [
        ("two", second),
        ("one", first),
    ]
    assert backend.read(current).version == second
    assert backend.probe(current) == second
    assert backend.probe(previous) == first
    calls.names.clear()
    by_id = loc(f"aws-sm://rot?version-id={first}")
    assert backend.probe(by_id) == first
    assert calls.names == [], "a pinned version-id needs no call"
    # a new version moves AWSCURRENT: probe sees it without reading the value
    third = aws.sm.put_secret_value(SecretId="rot", SecretString="three")["VersionId"]
    assert backend.probe_many([current, previous]) == [third, second]
    assert set(calls.names) == {"DescribeSecret"}
    with pytest.raises(NotFoundError):
        backend.probe(loc("aws-sm://rot?version-stage=AWSPENDING"))
    with pytest.raises(NotFoundError):
        backend.probe(loc("aws-sm://missing"))


def test_ssm_versions_and_batched_probe(
    aws: MotoServer, ssm: tuple[ParameterStoreBackend, Calls]
) -> None:
    backend, calls = ssm
    names = [f"/p/{i}" for i in range(12)]
    for name in names:
        aws.ssm.put_parameter(Name=name, Value="v", Type="SecureString")
    aws.ssm.put_parameter(Name=names[0], Value="w", Type="SecureString", Overwrite=True)
    locators = [loc(f"aws-ssm://{n}") for n in names]
    results = backend.read_many(locators)
    assert [r.version for r in results if isinstance(r, Fetched)] == ["2"] + ["1"] * 11
    assert calls.names == ["GetParameters"] * 2
    calls.names.clear()
    versions = backend.probe_many([*locators, loc("aws-ssm:///p/none")])
    assert versions[:12] == ["2"] + ["1"] * 11
    assert isinstance(versions[12], NotFoundError)
    assert calls.names == ["GetParameters"] * 2
    assert backend.probe(locators[0]) == "2"


def test_one_client_per_region_created_once(aws: MotoServer) -> None:
    backend = SecretsManagerBackend(aws.env)
    seen: list[Any] = []
    barrier = threading.Barrier(8)

    def grab(region: str) -> None:
        barrier.wait()
        seen.append(backend._clients.client(region))

    threads = [
        threading.Thread(target=grab, args=("us-east-1" if i % 2 else "eu-west-1",))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in seen}) == 2
    assert backend._clients.client("us-east-1") in seen
    backend.close()


def test_both_backends_share_one_session(aws: MotoServer) -> None:
    sm, ssm = SecretsManagerBackend(aws.env), ParameterStoreBackend(aws.env)
    assert sm._clients.session() is ssm._clients.session()


def test_missing_region(aws: MotoServer) -> None:
    env = {k: v for k, v in aws.env.items() if "REGION" not in k}
    backend = ParameterStoreBackend(env)
    [outcome] = backend.read_many([loc("aws-ssm:///x")])
    assert isinstance(outcome, ConfigError)
    assert "AWS_REGION" in str(outcome) and "?region=" in str(outcome)


def test_errors_are_separate_objects_per_locator(
    aws: MotoServer, sm: tuple[SecretsManagerBackend, Calls]
) -> None:
    backend, _ = sm
    outcomes = backend.read_many([loc("aws-sm://a"), loc("aws-sm://b")])
    assert all(isinstance(o, EnvwrapError) for o in outcomes)
    assert outcomes[0] is not outcomes[1]


def test_boto3_is_not_imported_without_aws_references() -> None:
    import subprocess
    import sys

    code = (
        "import sys, envwrap.cli, envwrap.modes.run, envwrap.resolve, envwrap.backends;"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
