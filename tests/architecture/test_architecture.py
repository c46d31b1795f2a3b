"""envwrap's start-up stays lean, and only the CLI prints or exits.

The layer and boundary rules are in test_import_rules.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from testsupport import ROOT

PACKAGE = ROOT / "src" / "envwrap"
STORE_LIBRARIES = ("hvac", "boto3", "botocore", "psutil", "watchdog", "requests",
                   "prometheus_client")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_files() -> dict[str, Path]:
    return {
        str(p.relative_to(PACKAGE).with_suffix("")).replace("/", "."): p
        for p in PACKAGE.rglob("*.py")
    }


def test_only_cli_exits_or_prints() -> None:
    for name, path in module_files().items():
        if name in ("cli", "__main__"):
            continue
        text = path.read_text()
        assert "sys.exit(" not in text and "SystemExit" not in text, name
        if name != "log":  # envwrap's own stderr messages
            assert "print(" not in text and "sys.stdout" not in text, name


def imported_modules(args: list[str], cwd: Path) -> set[str]:
    """Modules loaded by the time a real run would exec, read from ``sys.modules``.

    (``-X importtime`` cannot be used: its buffered report is lost at exec.)
    """
    script = (
        "import os, sys\n"
        "from envwrap.cli import main\n"
        "from envwrap.process import launch\n"
        "def report(argv, env):\n"
        "    print('\\n'.join(sorted(sys.modules)))\n"
        "    raise SystemExit(0)\n"
        "launch.exec_command = report\n"
        f"main({args!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


def test_start_up_without_references_stays_lean(tmp_path: Path) -> None:
    modules = imported_modules(["--", "true"], tmp_path)
    heavy = {m for m in modules if m.split(".")[0] in STORE_LIBRARIES}
    assert not heavy, heavy
    for costly in ("importlib.metadata", "argparse", "logging", "dotenv", "dataclasses",
                   "envwrap.resolve", "concurrent.futures",
                   "envwrap.telemetry.metrics", "http.server", "threading"):
        assert costly not in modules, costly
    # the store contract and registry (whose table names the credentials to
    # scrub), never a store's code
    stores = {m for m in modules if m.startswith("envwrap.backends")}
    assert stores <= {"envwrap.backends", "envwrap.backends.contract",
                      "envwrap.backends.registry", "envwrap.backends.fanout"}, stores


def test_builtin_schemes_do_not_scan_entry_points(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    (tmp_path / ".env").write_text(f"A=ref+file://{tmp_path}/pw\n")
    modules = imported_modules(["--", "true"], tmp_path)
    assert "envwrap.backends.file" in modules
    assert "importlib.metadata" not in modules
    assert not {m for m in modules if m.split(".")[0] in STORE_LIBRARIES}
