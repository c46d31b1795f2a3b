"""The backend contract, kept by both AWS backends against the real moto server."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from envwrap.backends import Backend
from envwrap.backends.aws_sm import SecretsManagerBackend
from envwrap.backends.aws_ssm import ParameterStoreBackend
from envwrap.refs import Locator
from envwrap.testing import BackendContract
from testsupport.fixtures_aws import MotoServer

_counter = itertools.count()


def _text(data: str | dict[str, Any]) -> str:
    return data if isinstance(data, str) else json.dumps(data)


class SecretsManagerStore:
    has_versions = True
    plain_key = None

    def __init__(self, aws: MotoServer) -> None:
        self.aws = aws
        self.backend: Backend = SecretsManagerBackend(aws.env)

    def write(self, name: str, data: str | dict[str, Any]) -> None:
        try:
            self.aws.sm.put_secret_value(SecretId=name, SecretString=_text(data))
        except self.aws.sm.exceptions.ResourceNotFoundException:
            self.aws.sm.create_secret(Name=name, SecretString=_text(data))

    def locator(self, name: str) -> Locator:
        return Locator("aws-sm", name)

    def unique_name(self) -> str:
        return f"contract/secret-{next(_counter)}"


class ParameterStore:
    has_versions = True
    plain_key = None

    def __init__(self, aws: MotoServer) -> None:
        self.aws = aws
        self.backend: Backend = ParameterStoreBackend(aws.env)

    def write(self, name: str, data: str | dict[str, Any]) -> None:
        self.aws.ssm.put_parameter(
            Name=name, Value=_text(data), Type="SecureString", Overwrite=True
        )

    def locator(self, name: str) -> Locator:
        return Locator("aws-ssm", name)

    def unique_name(self) -> str:
        return f"/contract/parameter-{next(_counter)}"


class TestSecretsManagerContract(BackendContract):
    @pytest.fixture
    def store(self, aws: MotoServer) -> Iterator[SecretsManagerStore]:
        store = SecretsManagerStore(aws)
        yield store
        store.backend.close()


class TestParameterStoreContract(BackendContract):
    @pytest.fixture
    def store(self, aws: MotoServer) -> Iterator[ParameterStore]:
        store = ParameterStore(aws)
        yield store
        store.backend.close()
