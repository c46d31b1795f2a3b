"""The Backend contract's defaults, the registry's fan-out, and what is never mapped."""

from __future__ import annotations

import importlib

import pytest

from envwrap.backends import Backend, BackendRegistry, Fetched, Lease, credential_names
from envwrap.backends.registry import BUILTIN_BACKENDS
from envwrap.environment import child_environment
from envwrap.errors import NotFoundError, ReferenceSyntaxError
from envwrap.refs import Locator


class Minimal(Backend):
    scheme = "minimal"

    def read(self, locator: Locator) -> Fetched:
        if locator.path == "missing":
            raise NotFoundError("no such secret")
        if locator.path == "bug":
            raise KeyError("data")
        return Fetched(locator.path)

    def validate(self, locator: Locator) -> None:
        if locator.path.startswith("/"):
            raise ReferenceSyntaxError("no absolute paths here")


def test_a_plugin_gets_no_op_defaults_for_everything_but_read() -> None:
    backend = Minimal({})
    lease = Lease("id", 60, True)
    locator = Locator("minimal", "a")
    assert backend.renew(lease) is None  # cannot renew: the watcher reads again
    assert backend.revoke(lease) is False
    assert backend.upkeep() is None
    assert backend.release() is False
    assert backend.watch_paths(locator) == ()
    assert backend.credential_names == frozenset()
    assert backend.probe(locator) is None


@pytest.mark.parametrize("scheme", sorted(BUILTIN_BACKENDS))
def test_the_builtin_table_knows_each_store_s_credential_names(scheme: str) -> None:
    builtin = BUILTIN_BACKENDS[scheme]
    cls = getattr(importlib.import_module(builtin.module), builtin.class_name)
    assert cls.credential_names == builtin.credential_names


def test_credentials_are_scrubbed_and_pass_env_keeps_them() -> None:
    assert {"VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID"} <= credential_names()
    environment = {"VAULT_TOKEN": "t", "VAULT_ADDR": "a", "ENVWRAP_X": "1", "A": "b"}
    assert child_environment(environment) == {"VAULT_ADDR": "a", "A": "b"}
    assert child_environment(environment, ["VAULT_TOKEN"])["VAULT_TOKEN"] == "t"


class MinimalRegistry(BackendRegistry):
    def __init__(self) -> None:
        super().__init__({})
        self.backend = Minimal({})

    def get(self, scheme: str) -> Backend:
        return self.backend


def test_registry_reads_each_distinct_locator_once_and_validates_first() -> None:
    registry = MinimalRegistry()
    a, missing, absolute = (Locator("minimal", p) for p in ("a", "missing", "/abs"))
    outcomes = registry.read_many([a, missing, a, absolute])
    assert list(outcomes) == [a, missing, absolute]
    assert isinstance(outcomes[a], Fetched) and outcomes[a].data == "a"
    assert isinstance(outcomes[missing], NotFoundError)
    assert isinstance(outcomes[absolute], ReferenceSyntaxError)


def test_a_bug_inside_a_read_is_not_turned_into_a_store_error() -> None:
    registry = MinimalRegistry()
    many = [Locator("minimal", p) for p in ("a", "bug", "c")]
    with pytest.raises(KeyError):
        registry.read_many(many)
    with pytest.raises(KeyError):
        Minimal({}).read_many(many)
