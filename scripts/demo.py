"""The envwrap demo (run through scripts/demo.sh). Prints fingerprints, never secrets."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "node-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def wait_for(what: str, probe, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def status(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
        return dict(json.load(response))


def bao(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(BIN / "bao"), *args], env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("demo: Node.js is needed for the example service (apt-get install nodejs)")
    vault_port, app_port = free_port(), free_port()
    token = secrets.token_hex(16)
    data_dir = tempfile.mkdtemp(prefix="envwrap-demo-")
    vault_env = {**os.environ, "VAULT_ADDR": f"http://127.0.0.1:{vault_port}", "VAULT_TOKEN": token,
                 "HOME": data_dir}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        step(f"starting an OpenBao dev server on 127.0.0.1:{vault_port}")
        processes.append(subprocess.Popen(
            [str(BIN / "bao"), "server", "-dev", f"-dev-root-token-id={token}",
             f"-dev-listen-address=127.0.0.1:{vault_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for("OpenBao", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{vault_port}/v1/sys/health", timeout=1).status == 200)

        step("storing the service's secrets in Vault (KV v2 at secret/)")
        bao(vault_env, "kv", "put", "secret/workflows/africastalking",
            f"api_key=at-{secrets.token_hex(8)}")
        bao(vault_env, "kv", "put", "secret/workflows/db", "user=workflows",
            f"password=pw-{secrets.token_hex(8)}")
        bao(vault_env, "kv", "put", "secret/workflows/jwt", f"secret=jwt-{secrets.token_hex(16)}")
        print((EXAMPLE / "vault.env").read_text().strip())

        run_env = {**vault_env, "PORT": str(app_port)}
        step("envwrap check: what resolves, from where, which version (never values)")
        subprocess.run([str(BIN / "envwrap"), "check", "--env-file", "vault.env"],
                       cwd=EXAMPLE, env=run_env, check=True)

        step("running: envwrap --env-file vault.env --watch --interval 1s -- node server.js")
        app = subprocess.Popen(
            [str(BIN / "envwrap"), "--env-file", "vault.env", "--watch", "--interval", "1s",
             "--log-level", "info", "--", node, "server.js"], cwd=EXAMPLE, env=run_env)
        processes.append(app)  # type: ignore[arg-type]
        before = wait_for("the service", lambda: status(app_port))
        print(f"service answers: {json.dumps(before)}")

        step("rotating the database password in Vault")
        rotated_at = time.monotonic()
        bao(vault_env, "kv", "put", "secret/workflows/db", "user=workflows",
            f"password=pw-{secrets.token_hex(8)}")
        after = wait_for("the restarted service", lambda: (
            (s := status(app_port))["databaseUrl"] != before["databaseUrl"] and s))
        took = time.monotonic() - rotated_at
        print(f"service answers: {json.dumps(after)}")
        print(f"\nDATABASE_URL fingerprint {before['databaseUrl']} -> {after['databaseUrl']}, "
              f"new pid {after['pid']} (was {before['pid']}), {took:.1f}s after the write.")
        if after["jwtSecret"] != before["jwtSecret"] or after["atApiKey"] != before["atApiKey"]:
            raise SystemExit("demo: an unrotated secret changed")
        print("demo: OK")
        return 0
    finally:
        step("cleaning up")
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
