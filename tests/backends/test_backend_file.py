"""The ref+file:// backend and the in-memory backend keep the backend contract."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from envwrap.backends import Backend
from envwrap.backends.file import FileBackend
from envwrap.backends.memory import MemoryBackend
from envwrap.errors import AuthError, InvalidValueError, NotFoundError
from envwrap.refs import Locator
from envwrap.testing import BackendContract

_counter = itertools.count()


class FileStore:
    has_versions = False
    plain_key = None

    def __init__(self, root: Path) -> None:
        self.root = root
        self.backend: Backend = FileBackend({})

    def write(self, name: str, data: str | dict[str, Any]) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        (self.root / name).write_text(text + "\n")

    def locator(self, name: str) -> Locator:
        return Locator("file", str(self.root / name))

    def unique_name(self) -> str:
        return f"secret-{next(_counter)}"


class MemoryStore:
    has_versions = True
    plain_key = None

    def __init__(self) -> None:
        self.backend: Backend = MemoryBackend({})

    def write(self, name: str, data: str | dict[str, Any]) -> None:
        MemoryBackend.put(name, data)

    def locator(self, name: str) -> Locator:
        return Locator("memory", name)

    def unique_name(self) -> str:
        return f"app/secret-{next(_counter)}"


class TestFileContract(BackendContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FileStore:
        return FileStore(tmp_path)


class TestMemoryContract(BackendContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()


def test_file_strips_exactly_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"pw\n\n")
    (tmp_path / "b").write_bytes(b"pw\r\n")
    backend = FileBackend({})
    assert backend.read(Locator("file", str(tmp_path / "a"))).data == "pw\n"
    assert backend.read(Locator("file", str(tmp_path / "b"))).data == "pw"


def test_file_errors(tmp_path: Path) -> None:
    backend = FileBackend({})
    with pytest.raises(NotFoundError):
        backend.read(Locator("file", str(tmp_path)))
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidValueError):
        backend.read(Locator("file", str(tmp_path / "bin")))
    locked = tmp_path / "locked"
    locked.write_text("x")
    locked.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(AuthError):
            backend.read(Locator("file", str(locked)))


def test_memory_versions() -> None:
    MemoryBackend.put("x", "one")
    MemoryBackend.put("x", "two")
    backend = MemoryBackend({})
    assert backend.read(Locator("memory", "x")).data == "two"
    assert backend.read(Locator("memory", "x", (("version", "-1"),))).data == "one"
    assert backend.read(Locator("memory", "x", (("version", "1"),))).data == "one"
    with pytest.raises(NotFoundError):
        backend.read(Locator("memory", "x", (("version", "7"),)))
