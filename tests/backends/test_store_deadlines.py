"""Start-up has a deadline and a store's reply a size (docs/SECURITY.md, Network).

A store that drips a byte at a time is left behind at ``--start-timeout``; a
200 MB reply is refused after the first MiB, in little time and memory; one
Ctrl-C while a read hangs ends envwrap at once. Through the real command,
against fake stores on loopback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.fake_store import FakeStore, drip, hang, huge, vault_kv2
from testsupport.helpers import run_envwrap, wait_until

ARGS = ["--no-env-file", "--log-level", "debug"]


def vault_env(base_env: dict[str, str], store: FakeStore, **extra: str) -> dict[str, str]:
    return {**base_env, "VAULT_ADDR": store.url, "VAULT_TOKEN": "t", "HOME": "/nonexistent",
            **extra}


@pytest.mark.parametrize("which", ["the read", "every request"])
def test_a_dripping_store_is_left_behind_at_the_start_timeout(
    fake_store: FakeStore, base_env: dict[str, str], which: str
) -> None:
    vault_kv2(fake_store, {"app": drip(every=0.3)})
    if which == "every request":  # the mount detection too: through hvac and requests
        fake_store.routes.clear()
        fake_store.answer("GET", "*", drip(every=0.3))
    env = vault_env(base_env, fake_store, X="vault://secret/app#k", F="plain")
    started = time.monotonic()
    result = run_envwrap([*ARGS, "--start-timeout", "2s", "--", "true"], env=env, timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 69, result.stderr
    # the deadline, and the grace an attempt under way has to finish (resolve.ATTEMPT_GRACE)
    assert elapsed < 2 + 5 + 3, f"start-up took {elapsed:.1f}s for a 2s deadline"
    assert "X: vault://secret/app#k: store still unreachable after 2s" in result.stderr
    assert "vault:// store did not answer in time" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_huge_reply_is_refused_after_a_mebibyte(
    fake_store: FakeStore, base_env: dict[str, str], tmp_path: Path, declared: bool
) -> None:
    vault_kv2(fake_store, {"app": huge(200 * 1024 * 1024, declare_length=declared)})
    env = vault_env(base_env, fake_store, X="vault://secret/app#k")
    # the peak memory of envwrap alone: a parent that runs it and reports its children's
    report = tmp_path / "rusage.json"
    measure = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.monotonic()\n"
        "code = subprocess.run(sys.argv[2:]).returncode\n"
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "open(sys.argv[1], 'w').write(json.dumps({'code': code, 'kib': usage.ru_maxrss,\n"
        "                                         'seconds': time.monotonic() - t}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, str(report), *envwrap_command(), *ARGS,
         "--start-timeout", "20s", "--", "true"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    figures = json.loads(report.read_text())
    assert figures["code"] == 69, result.stderr
    assert "is larger than 1048576 bytes" in result.stderr
    assert "X: vault://secret/app#k:" in result.stderr
    assert figures["seconds"] < 10, figures
    assert figures["kib"] < 150 * 1024, figures  # the whole body would be 200 MiB and more
    reads = [seen for seen in fake_store.seen if seen.path == "/v1/secret/data/app"]
    assert len(reads) == 1, "a refused reply is not read again"


def test_one_ctrl_c_while_a_read_hangs_ends_envwrap_at_once(
    fake_store: FakeStore, base_env: dict[str, str], tmp_path: Path
) -> None:
    fake_store.answer("GET", "*", hang)  # accepts, never answers
    secret_file = tmp_path / "password"
    secret_file.write_text("from-a-file\n")
    # two paths on a second store: reads run side by side, in threads of threads
    env = vault_env(base_env, fake_store, X="vault://secret/app#k", Y="vault://other/db#k",
                    F=f"ref+file://{secret_file}")
    process = subprocess.Popen(
        [*envwrap_command(), *ARGS, "--start-timeout", "60s", "--", "true"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: len(fake_store.seen) >= 2, timeout=20)
        time.sleep(0.2)  # the request is in flight: envwrap waits for the reply
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        code = process.wait(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=10)
    assert code == 130, stderr
    assert elapsed < 2, f"envwrap took {elapsed:.1f}s to end after Ctrl-C"
    assert "Traceback" not in stderr
