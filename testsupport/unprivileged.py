"""Run a command as an unprivileged user, and make the files it needs reachable.

The suite runs as root in CI; tests of what "another process of the same user"
can see drop to ``nobody`` with ``setpriv`` instead of skipping. The checkout,
the interpreter and the test's files must then be reachable by that user:
:func:`reachable` adds the missing search (and read) bits to them for the
test's duration, and puts the old modes back.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from testsupport import ROOT

__all__ = ["NOBODY", "as_nobody", "reachable"]

#: the uid the tests drop to when run as root
NOBODY = pwd.getpwnam("nobody").pw_uid


def as_nobody() -> list[str]:
    """The prefix that runs a command as ``nobody`` (nothing when not root already)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed to drop privileges as root"
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _with_bits(path: Path, bits: int, changed: list[tuple[Path, int]]) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & bits != bits:
        changed.append((path, mode))
        path.chmod(mode | bits)


@contextlib.contextmanager
def reachable(*paths: Path) -> Iterator[None]:
    """Others may search every folder down to each of ``paths`` (and the checkout
    and interpreter), and read the files among them, until the block ends."""
    if os.geteuid() != 0:
        yield
        return
    changed: list[tuple[Path, int]] = []
    targets = [ROOT, Path(sys.executable), Path(os.path.realpath(sys.executable)),
               Path(sys.prefix), Path(sys.base_prefix), *paths]
    try:
        for target in targets:
            target = target.resolve()
            for folder in reversed(target.parents):
                _with_bits(folder, stat.S_IXOTH, changed)
            if target.is_dir():
                _with_bits(target, stat.S_IXOTH | stat.S_IROTH, changed)
            else:
                _with_bits(target, stat.S_IROTH, changed)
        yield
    finally:
        for path, mode in reversed(changed):
            path.chmod(mode)
