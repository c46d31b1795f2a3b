#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, lint, types, tests.
# Tests start their own OpenBao (bao server -dev) and moto servers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests testsupport benchmarks scripts
.venv/bin/mypy
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
