"""--watch follows edits of the .env file itself."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from testsupport import envwrap_command
from testsupport.helpers import LineCollector, assert_not_leaked, canary

CHILD = ["sh", "-c", 'echo "started $$ $PORT $AT_USERNAME"; exec sleep 300']


def test_editing_dotenv_restarts_with_the_new_values(workdir: Path, base_env: dict[str, str]) -> None:
    secret = canary()
    (workdir / "key").write_text(secret)
    (workdir / ".env").write_text(f"PORT=3001\nAT_USERNAME=sandbox\nAT_API_KEY=ref+file://{workdir}/key\n")
    proc = subprocess.Popen([*envwrap_command(), "--watch", "--interval", "30s", "--", *CHILD],
                            env=base_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    errors = LineCollector(proc.stderr)
    try:
        first = proc.stdout.readline().split()
        assert first[0] == "started" and first[2:] == ["3001", "sandbox"]
        (workdir / ".env").write_text(f"PORT=3002\nAT_USERNAME=sandbox\nAT_API_KEY=ref+file://{workdir}/key\n")
        second = proc.stdout.readline().split()
        assert second[2:] == ["3002", "sandbox"] and second[1] != first[1]
        # a broken edit keeps the program running on the last good values
        (workdir / ".env").write_text("PORT='3003\n")
        errors.wait_for("cannot be used")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    err = errors.join()
    assert "line 1" in err
    assert proc.returncode == 128 + signal.SIGTERM, err  # sleep died of the forwarded SIGTERM
    assert_not_leaked(secret, err)
