"""The Supervisor's thread-safe operations (replace, send, request_exit), in-process.

The rotation drives them from watcher threads; ``supervisor_driver.py`` does the
same from a thread of its own, in a real process of its own (the supervisor
blocks signals and becomes a subreaper, which a pytest process must not).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testsupport import PROGRAMS, ROOT


def drive(scenario: str, tmp_path: Path) -> tuple[int, list[str], str]:
    result = subprocess.run(
        [sys.executable, str(PROGRAMS / "supervisor_driver.py"), scenario, str(tmp_path / "lock")],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )
    return result.returncode, result.stdout.splitlines(), result.stderr


def test_replace_send_and_exit_from_a_thread(tmp_path: Path) -> None:
    code, lines, stderr = drive("rotate", tmp_path)
    assert code == 7, (lines, stderr)
    assert not [line for line in lines if "OVERLAP" in line or "ERROR" in line], lines
    ready = [line.split()[-1] for line in lines if line.startswith("child: ready")]
    # gen=3 was superseded by gen=4 before the old generation was gone
    assert ready == ["gen=1", "gen=2", "gen=4"]
    replaced = [line for line in lines if line.startswith("replaced")]
    assert len(replaced) == 3
    # when each new generation started, the old one (and its grandchild,
    # which ignores everything but SIGKILL) were gone and reaped
    assert all(line.endswith(", False, False)") for line in replaced), replaced
    assert "sent True" in lines
    assert "exiting 7" in lines
    assert [line for line in lines if line.startswith("gone")] == [
        line for line in lines if line.startswith("gone") and line.endswith("True True")
    ]
    assert "generations 3" in lines
    assert stderr.count("did not stop within 0.3s") == 3  # the grandchild, each time


def test_a_replacement_that_cannot_start_ends_supervision_with_127(tmp_path: Path) -> None:
    code, lines, stderr = drive("replace-fails", tmp_path)
    assert code == 127, (lines, stderr)
    assert "replaced None" in lines
    assert "cannot restart the program: python" in stderr
    assert ": command not found" in stderr
    assert "gone" in lines[-1] and lines[-1].endswith("True True")
