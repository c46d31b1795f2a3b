#!/usr/bin/env bash
# Set up a development environment from nothing: a virtualenv in .venv with
# envwrap (editable), every backend and the test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet -e '.[all,test]'
# tests/packaging/test_bundle.py runs the bundle in a chroot that holds a static busybox
# as its only program (and no Python).
if [ ! -x /bin/busybox ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get install -y -qq busybox-static \
        || { apt-get update -qq && apt-get install -y -qq busybox-static; }; } >/dev/null 2>&1
fi
