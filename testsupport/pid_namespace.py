"""PID namespaces for the tests of envwrap as PID 1: whether this machine can make one.

``needs_pid_namespace`` skips a test where it cannot (without root). Its condition is
a string, so that the probe runs only when such a test is about to run, not at
collection; this module is a pytest plug-in (``tests/conftest.py``) whose
``pytest_markeval_namespace`` gives that string :func:`pid_namespaces_work`.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


@functools.cache
def pid_namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run([*UNSHARE, "sh", "-c", "test $$ = 1"], capture_output=True,
                               timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


needs_pid_namespace = pytest.mark.skipif(
    "not pid_namespaces_work()", reason="cannot create a PID namespace here (needs root)"
)


def pytest_markeval_namespace() -> dict[str, object]:
    """Names for the string conditions of ``skipif`` marks."""
    return {"pid_namespaces_work": pid_namespaces_work}
