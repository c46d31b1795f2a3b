"""pytest plug-in: the bundle (scripts/bundle.sh), built once per session.

The slow part is cached across sessions by scripts/bundle/build.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testsupport import ROOT


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "envwrap"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bundle.sh"), str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out
