"""The distribution users install from PyPI: its name, metadata, files, command.

Built once per session (sdist, then the wheel from the sdist, so a file missing
from the sdist breaks the wheel too), checked with twine as PyPI would, and
installed into a fresh virtualenv.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from testsupport import ROOT

pytestmark = pytest.mark.slow

NAME = "envwrap-secrets"  # free on PyPI; "envwrap" there is another project


def _run(*argv: str | Path, timeout: float = 600) -> str:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv[:3]}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    return out


@pytest.fixture(scope="session")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("*.whl")
    return found


@pytest.fixture(scope="session")
def sdist(dist: Path) -> Path:
    (found,) = dist.glob("*.tar.gz")
    return found


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed (and its one dependency)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
    return venv


def test_twine_accepts_both(dist: Path) -> None:
    out = _run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert out.count("PASSED") == 2


def test_names_and_extras_in_the_wheel_metadata(wheel: Path) -> None:
    assert wheel.name.startswith("envwrap_secrets-")
    with zipfile.ZipFile(wheel) as z:
        (meta_name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(z.read(meta_name).decode())
        names = z.namelist()
    assert meta["Name"] == NAME
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(project["optional-dependencies"])
    assert set(meta.get_all("Provides-Extra") or []) == extras
    requires = meta.get_all("Requires-Dist") or []
    # `all` pulls in every other extra's requirements (but not the test tools).
    in_all = {r.split(";")[0] for r in requires if r.endswith("extra == 'all'")}
    for extra in extras - {"all", "test"}:
        assert set(project["optional-dependencies"][extra]) <= in_all, extra
    assert "envwrap/__init__.py" in names and "envwrap/py.typed" in names
    # the backend contract ships for plug-ins; the project's own tests do not
    assert "envwrap/testing/backend_contract.py" in names
    assert not [n for n in names if n.startswith(("tests/", "testsupport/", "benchmarks/"))]


def test_sdist_holds_what_the_wheel_is_built_from(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "bin/envwrap", "src/envwrap/cli.py"} <= names


def test_wheel_installs_the_command_and_the_backend_entry_points(installed: Path) -> None:
    assert _run(installed / "bin" / "envwrap", "--version").startswith("envwrap ")
    out = _run(installed / "bin" / "envwrap", "--", "sh", "-c", "echo ran")
    assert out == "ran\n"
    listing = _run(installed / "bin" / "python", "-c", (
        "from importlib.metadata import entry_points\n"
        "for ep in sorted(entry_points(group='envwrap.backends'), key=lambda e: e.name):\n"
        "    print(ep.name, ep.value, ep.dist.name)\n"
    ))
    assert listing.splitlines() == [
        f"aws-sm envwrap.backends.aws_sm:SecretsManagerBackend {NAME}",
        f"aws-ssm envwrap.backends.aws_ssm:ParameterStoreBackend {NAME}",
        f"file envwrap.backends.file:FileBackend {NAME}",
        f"memory envwrap.backends.memory:MemoryBackend {NAME}",
        f"vault envwrap.backends.vault:VaultBackend {NAME}",
    ]


def test_missing_extra_names_the_distribution(installed: Path) -> None:
    """Without the aws extra, the fix printed is an install of *our* distribution."""
    result = subprocess.run(
        [str(installed / "bin" / "envwrap"), "--", "true"],
        env={"PATH": "/usr/bin:/bin", "X": "aws-sm://prod/db#password", "AWS_DEFAULT_REGION": "us-east-1"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 78, result.stderr
    assert f"pip install '{NAME}[aws]'" in result.stderr


def test_nothing_tells_users_to_install_the_other_pypi_project() -> None:
    """`pip install envwrap` / `envwrap[extra]` installs an unrelated project."""
    wrong = re.compile(r"(?<![\w-])envwrap\[|pip install (?:-U )?['\"]?envwrap(?![\w-])")
    files = [*ROOT.glob("src/**/*.py"), *ROOT.glob("examples/**/*"), *ROOT.glob("scripts/**/*"),
             ROOT / "README.md", ROOT / "Dockerfile.sidecar", ROOT / "pyproject.toml"]
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files if path.is_file()
        for match in wrong.finditer(path.read_text(errors="replace"))
    ]
    assert not found
