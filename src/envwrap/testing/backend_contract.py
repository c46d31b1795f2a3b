"""The contract every backend keeps, as a mixin its tests reuse (as keyring's tests do).

A backend's test module subclasses :class:`BackendContract` and provides a
``store`` fixture returning a :class:`StoreAdapter` for that backend, backed by
the real store (OpenBao, moto) or by real files (``envwrap.testing`` shows how).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Protocol

import pytest

from envwrap.backends import Backend, Fetched
from envwrap.backends.contract import revision_of
from envwrap.errors import EnvwrapError, NotFoundError
from envwrap.refs import Locator
from envwrap.resolve import select


class StoreAdapter(Protocol):
    """How the contract tests reach one store."""

    backend: Backend
    #: whether probe() returns a version id (False: the watcher re-reads and compares)
    has_versions: bool
    #: where ``write`` puts a plain string in a store that only holds key-value
    #: secrets (Vault: ``"value"``); ``None`` where plain strings are stored as they are
    plain_key: str | None

    def write(self, name: str, data: str | dict[str, Any]) -> None:
        """Create the secret ``name`` or give it a new version."""

    def locator(self, name: str) -> Locator:
        """A locator for the current version of ``name``."""

    def unique_name(self) -> str:
        """A name no other test uses."""


def canary(label: str) -> str:
    """A unique secret value that cannot appear anywhere by accident."""
    return f"{label}-{secrets.token_hex(12)}"


def _data_text(fetched: Fetched) -> str:
    return select(fetched.data, None)


class BackendContract:
    """The contract's tests; a subclass named ``Test...`` provides the ``store`` fixture."""

    def test_reads_plain_text(self, store: StoreAdapter) -> None:
        name, value = store.unique_name(), canary("plain")
        store.write(name, value)
        assert select(store.backend.read(store.locator(name)).data, store.plain_key) == value

    def test_reads_key_value_and_selects_keys(self, store: StoreAdapter) -> None:
        name, password = store.unique_name(), canary("pw")
        store.write(name, {"user": "app", "password": password, "nested": {"port": 5432}})
        fetched = store.backend.read(store.locator(name))
        assert select(fetched.data, "password") == password
        assert select(fetched.data, "/nested/port") == "5432"
        assert json.loads(_data_text(fetched))["user"] == "app"

    def test_missing_secret_is_not_found_and_quotes_no_value(self, store: StoreAdapter) -> None:
        neighbour, value = store.unique_name(), canary("neighbour")
        store.write(neighbour, value)
        with pytest.raises(NotFoundError) as caught:
            store.backend.read(store.locator(store.unique_name()))
        assert caught.value.exit_code == 65
        assert value not in str(caught.value)
        assert "Traceback" not in str(caught.value)

    def test_read_many_returns_one_outcome_per_locator_in_order(
        self, store: StoreAdapter
    ) -> None:
        names = [store.unique_name() for _ in range(3)]
        values = [canary(f"many{i}") for i in range(3)]
        for name, value in zip(names, values, strict=True):
            store.write(name, value)
        missing = store.locator(store.unique_name())
        locators = [store.locator(n) for n in names]
        outcomes = store.backend.read_many([locators[0], missing, locators[1], locators[2]])
        assert len(outcomes) == 4
        assert isinstance(outcomes[1], NotFoundError)
        found = [outcomes[0], outcomes[2], outcomes[3]]
        for outcome, value in zip(found, values, strict=True):
            assert isinstance(outcome, Fetched)
            assert select(outcome.data, store.plain_key) == value
        for outcome in outcomes:
            if isinstance(outcome, EnvwrapError):
                assert all(v not in str(outcome) for v in values)

    def test_new_version_is_seen(self, store: StoreAdapter) -> None:
        name, first, second = store.unique_name(), canary("v1"), canary("v2")
        store.write(name, first)
        locator = store.locator(name)
        before = revision_of(store.backend.probe(locator))
        store.write(name, second)
        assert select(store.backend.read(locator).data, store.plain_key) == second
        after = revision_of(store.backend.probe(locator))
        if store.has_versions:
            assert before is not None and after is not None and before != after
            # what a read saw is what the watcher watches: no second look to confirm
            assert store.backend.read(locator).revision == after
        else:
            assert before is None and after is None

    def test_repr_of_fetched_shows_no_value(self, store: StoreAdapter) -> None:
        name, value = store.unique_name(), canary("repr")
        store.write(name, value)
        fetched = store.backend.read(store.locator(name))
        assert value not in repr(fetched)
