"""The kubelet's AtomicWriter layout for secret volumes, reproduced on disk.

    /vol/password -> ..data/password
    /vol/..data   -> ..2026_11_29_10_00_00.123456789
    /vol/..2026_11_29_10_00_00.123456789/password

An update writes a new timestamped folder, points ``..data_tmp`` at it, renames
``..data_tmp`` over ``..data`` (the atomic step), then removes the old folder.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


def _timestamped(volume: Path) -> Path:
    return volume / time.strftime(f"..%Y_%m_%d_%H_%M_%S.{time.monotonic_ns()}")


def write_volume(volume: Path, files: dict[str, str]) -> None:
    volume.mkdir(parents=True, exist_ok=True)
    data = _timestamped(volume)
    data.mkdir()
    for name, content in files.items():
        (data / name).write_text(content)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    os.symlink(data.name, volume / "..data_tmp")
    os.rename(volume / "..data_tmp", volume / "..data")
    for name in files:
        link = volume / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    if old:
        shutil.rmtree(volume / old)
