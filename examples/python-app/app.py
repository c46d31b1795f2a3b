"""A Python web app that reloads its secrets on SIGHUP from a file envwrap renders.

    envwrap --watch --on-change signal --reload-signal SIGHUP \
            --render /run/app/secrets.json -- python app.py

The process keeps its PID and its connections; on SIGHUP it re-reads the
rendered file. It prints fingerprints, never values.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRETS_FILE = os.environ.get("SECRETS_FILE", "/run/app/secrets.json")
secrets: dict[str, str] = {}


def fingerprint(value: str | None) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12] if value else "(unset)"


def load_secrets(*_: object) -> None:
    with open(SECRETS_FILE, encoding="utf-8") as handle:
        secrets.clear()
        secrets.update(json.load(handle))
    print(f"secrets loaded: DATABASE_URL={fingerprint(secrets.get('DATABASE_URL'))} "
          f"AT_API_KEY={fingerprint(secrets.get('AT_API_KEY'))}", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"pid": os.getpid(),
                           "database_url": fingerprint(secrets.get("DATABASE_URL")),
                           "at_api_key": fingerprint(secrets.get("AT_API_KEY"))}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def main() -> None:
    load_secrets()
    signal.signal(signal.SIGHUP, load_secrets)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Handler)
    print(f"app ready on :{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
