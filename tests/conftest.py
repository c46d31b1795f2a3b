"""Shared fixtures. Store servers live in their own plug-in modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# pytest rewrites the asserts of test modules and plug-ins (their failures show the
# operands); the support modules below came out of test modules and keep that.
# testsupport.helpers is left alone: assert_not_leaked must never print a value.
pytest.register_assert_rewrite("testsupport.handoff", "testsupport.resolving", "testsupport.webhook",
                               "testsupport.tty")

pytest_plugins = [
    "testsupport.fixtures_vault",
    "testsupport.fixtures_aws",
    "testsupport.fake_store",
    "testsupport.rotation",
    "testsupport.pid_namespace",
    "testsupport.bundle",
    "testsupport.cache",
    "testsupport.postgres",
]


@pytest.fixture(autouse=True)
def _clean_memory_store() -> Iterator[None]:
    from envwrap.backends.memory import MemoryBackend
    from envwrap.secret import known_values

    MemoryBackend.reset()
    yield
    MemoryBackend.reset()
    known_values.clear()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory, so that no stray ./.env is read."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def base_env() -> dict[str, str]:
    """A minimal environment for envwrap subprocesses."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep}
