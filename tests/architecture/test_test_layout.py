"""The suite's own layout: test modules share code only through ``testsupport``.

A test module that imports another couples two behaviours' tests (moving or
deleting one breaks the other); what tests share lives in ``testsupport/``, which
the benchmarks and the demo use too. Every import counts: top-level, deferred
inside a function, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport import ROOT


def imported_modules(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, dotted; a relative import keeps its leading dots."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            yield base
            # `from tests import test_x` and `from . import test_x` import modules too
            yield from (f"{base.rstrip('.')}.{alias.name}" if node.module
                        else f"{base}{alias.name}" for alias in node.names)


def imports_a_test_module(module: str) -> bool:
    parts = module.lstrip(".").split(".")
    return parts[0] == "tests" or any(part.startswith("test_") for part in parts)


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_imported_modules_sees_every_form_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "import tests.helpers\n"
        "from tests import test_cli\n"
        "from . import test_watch\n"
        "if TYPE_CHECKING:\n"
        "    from test_cache import forms\n"
        "def later():\n"
        "    import testsupport.helpers\n"
    )
    found = list(imported_modules(sample))
    assert [m for m in found if imports_a_test_module(m)] == [
        "tests.helpers", "tests", "tests.test_cli", ".test_watch", "test_cache",
        "test_cache.forms",
    ]
    assert "testsupport.helpers" in found
    assert not imports_a_test_module("testsupport.helpers")


@pytest.mark.parametrize("folder", ["tests", "testsupport", "benchmarks", "scripts"])
def test_no_module_imports_a_test_module(folder: str) -> None:
    files = python_files(folder)
    assert files, f"no Python files under {folder}/"
    bad = {
        str(path.relative_to(ROOT)): sorted({m for m in imported_modules(path)
                                             if imports_a_test_module(m)})
        for path in files
    }
    assert not {path: modules for path, modules in bad.items() if modules}


def test_test_modules_live_in_folders_by_behaviour() -> None:
    tests = ROOT / "tests"
    loose = sorted(p.name for p in tests.glob("*.py") if p.name != "conftest.py")
    assert not loose, f"test modules belong in a folder of tests/: {loose}"


def test_envwrap_never_imports_its_testing_package() -> None:
    """``envwrap.testing`` imports pytest: only a test suite may load it."""
    package = ROOT / "src" / "envwrap"
    bad = {
        str(path.relative_to(package)): sorted(m for m in imported_modules(path)
                                               if m.startswith("envwrap.testing"))
        for path in package.rglob("*.py")
        if "testing" not in path.relative_to(package).parts
    }
    assert not {path: modules for path, modules in bad.items() if modules}
