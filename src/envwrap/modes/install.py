"""``envwrap install DIR``: copy this envwrap -- the bundle it runs from -- into DIR.

For an init container that puts envwrap into a shared volume: the bundle runs
from any path and needs no Python in the application image
(``scripts/bundle.sh`` builds it). An envwrap installed by pip cannot be copied
that way; it says so and exits 78.

Every file is made readable (and the programs executable) by everyone, because
the application container usually runs as another user than the init
container. ``DIR/envwrap`` is written last, under a temporary name then
renamed: when it exists, the copy is complete.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from envwrap.errors import ConfigError, UsageError

__all__ = ["bundle_root", "install"]

LAUNCHER = "envwrap"


def bundle_root() -> Path | None:
    """The folder of the bundle this interpreter runs from, or ``None`` when not a bundle.

    The bundle's launcher embeds CPython with ``sys.executable`` set to
    ``ROOT/envwrap`` and this package under ``ROOT/lib/pythonX.Y/site-packages``;
    it also runs without ``site`` (``sys.flags.no_site``). A pip install has a
    ``python`` as its executable, and its package elsewhere.
    """
    executable = Path(sys.executable) if sys.executable else None
    if executable is None or executable.name != LAUNCHER or not sys.flags.no_site:
        return None
    root = executable.parent
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    package = Path(__file__).resolve().parents[1]
    if not package.is_relative_to((root / "lib" / version / "site-packages").resolve()):
        return None
    return root


def install(argv: list[str]) -> Path:
    """Copy the running bundle into the folder ``argv[0]``; the path of the copied command."""
    if len(argv) != 1:
        raise UsageError("'envwrap install' takes one folder", hint="envwrap install /envwrap")
    target = Path(os.path.abspath(argv[0]))
    root = bundle_root()
    if root is None:
        raise ConfigError(
            "envwrap install copies the self-contained bundle, and this envwrap runs from a "
            f"Python installation ({sys.executable}), not from a bundle",
            hint="run it from the bundle image (Dockerfile.sidecar, target bundle) or build "
                 "one with 'bash scripts/bundle.sh OUTDIR'",
        )
    if target.resolve() == root.resolve() or target.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"cannot install envwrap into its own folder {target}")
    try:
        target.mkdir(parents=True, exist_ok=True)
        for entry in sorted(root.iterdir()):
            if entry.name == LAUNCHER:
                continue
            destination = target / entry.name
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, destination, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, destination, follow_symlinks=False)
        _open_to_everyone(target)
        partial = target / f".{LAUNCHER}.partial"
        shutil.copy2(root / LAUNCHER, partial)
        partial.chmod(0o755)
        os.replace(partial, target / LAUNCHER)
    except OSError as exc:
        raise ConfigError(
            f"envwrap install: cannot copy the bundle into {target}: "
            f"{exc.strerror or type(exc).__name__}"
            + (f" ({exc.filename})" if exc.filename else ""),
            hint="the folder must be writable (an emptyDir volume mounted there)",
        ) from None
    return target / LAUNCHER


def _open_to_everyone(top: Path) -> None:
    for folder, dirs, files in os.walk(top):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o755)  # noqa: S103 -- other users run it
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            os.chmod(path, 0o755 if mode & 0o111 else 0o644)
