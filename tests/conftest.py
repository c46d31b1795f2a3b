"""Shared fixtures. Store servers live in their own plug-in modules."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures_vault",
    "tests.fixtures_aws",
]

ROOT = Path(__file__).resolve().parent.parent


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


def envwrap_command() -> list[str]:
    """The installed ``envwrap`` console script, next to this interpreter."""
    script = Path(sys.executable).parent / "envwrap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envwrap"]


@pytest.fixture
def base_env() -> dict[str, str]:
    """A minimal environment for envwrap subprocesses."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep}
