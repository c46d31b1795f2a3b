#!/usr/bin/env bash
# The demo, from a fresh clone: set-up, then a local OpenBao dev server, the
# team's Node.js service run through `envwrap --watch`, a secret rotation, and
# the service coming back with the new value; then rotations under HTTP load with
# `--listen --ready notify --on-change handoff` (0 failed requests) and a secret
# the service rejects, rolled back; then the Node + PostgreSQL example moving to new
# database credentials under load. About 30 s; cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
