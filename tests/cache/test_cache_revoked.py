"""``--cache`` hardening (issue 22, rows 13 and 22), through the installed envwrap.

Revoked access stays revoked: a denial seen while watching deletes the cache, so that
a restart during a later outage (the store stopped) does not start on the revoked
secrets -- also when the denial comes after a run of unreachable errors, which is
logged and audited. An authentic but old cache file put back over a newer one is
refused (docs/SECURITY.md, "Cache"); so is a key file others may read. Every test
checks that no value shows in envwrap's output, its audit log, or the cache file.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport.cache import CHILD, CacheSetup
from testsupport.fixtures_vault import OpenBao, start_openbao
from testsupport.helpers import assert_not_leaked, canary, fp, run_envwrap, wait_until
from testsupport.rotation import Wrapped

pytestmark = pytest.mark.slow

#: a generation that says which value it runs on, then stays
LONG_CHILD = ["/bin/sh", "-c", 'printf "started %s %s\\n" "$$" '
              '"$(printf %s "$DB" | sha256sum | cut -c1-12)"; exec sleep 3600']


def reader_token(server: OpenBao, path: str) -> str:
    """A token that may read ``secret/<path>`` only (and revoke itself): what a
    program's Vault role gives it."""
    name = f"cache-reader-{secrets.token_hex(4)}"
    server.policy(name, f'path "secret/data/{path}" {{ capabilities = ["read"] }}\n'
                        f'path "secret/metadata/{path}" {{ capabilities = ["read"] }}\n')
    return server.child_token([name])


@pytest.fixture
def own_openbao(tmp_path: Path) -> Iterator[OpenBao]:
    """An OpenBao server of this test's own, which the test stops (a real outage)."""
    server = start_openbao(tmp_path / "openbao")
    yield server
    server.stop()


def audit_of(setup: CacheSetup, event: str) -> list[tuple[object, object]]:
    return [(r.get("variable"), r["outcome"]) for r in setup.audit_records()
            if r["event"] == event]


def test_revoked_token_while_watching_deletes_the_cache(
    tmp_path: Path, own_openbao: OpenBao, base_env: dict[str, str], envwrap_watch: object
) -> None:
    setup = CacheSetup(tmp_path, own_openbao, base_env)
    setup.proxy.close()  # not used: envwrap talks to the server itself
    token = reader_token(own_openbao, setup.path)
    env = {**setup.env, "VAULT_ADDR": own_openbao.addr, "VAULT_TOKEN": token}
    run: Wrapped = envwrap_watch(env, LONG_CHILD, *setup.args()[3:])  # type: ignore[operator]
    first = run.wait_start(fp(setup.value))
    wait_until(setup.cache.exists)

    own_openbao.client.auth.token.revoke(token)

    wait_until(lambda: not setup.cache.exists(), timeout=15)
    wait_until(lambda: "fallback cache deleted: a store answered denied" in run.stderr())
    assert run.starts() == [(first, fp(setup.value))], "the program keeps its values"
    assert ("DB", "denied") in audit_of(setup, "access")
    # the file goes first, then the log line and the audit record say why
    wait_until(lambda: audit_of(setup, "cache") == [(None, "deleted")], timeout=5)
    run.settle()
    assert not setup.cache.exists(), "nothing writes the revoked secrets back"
    run.stop()

    own_openbao.stop()  # the outage: a restart now must not start on the revoked secrets
    later = setup.run(env=env)
    assert later.returncode == 69, later.stderr
    assert later.stdout == "", "the program must not start"
    assert "fallback cache not used: there is none yet" in later.stderr
    run.assert_clean(setup.value, token)
    setup.assert_clean(later.stderr, run.stderr(), values=(token,))


def test_denial_after_an_outage_is_logged_audited_and_deletes_the_cache(
    cache_setup: CacheSetup, envwrap_watch: object
) -> None:
    setup = cache_setup
    token = reader_token(setup.openbao, setup.path)
    env = {**setup.env, "VAULT_TOKEN": token}
    run: Wrapped = envwrap_watch(env, LONG_CHILD, *setup.args()[3:])  # type: ignore[operator]
    first = run.wait_start(fp(setup.value))
    wait_until(setup.cache.exists)

    setup.proxy.cut()  # a run of unreachable errors ...
    wait_until(lambda: "store unreachable; the program keeps its current values"
               in run.stderr(), timeout=15)
    setup.openbao.client.auth.token.revoke(token)
    setup.proxy.restore()  # ... then the store answers: denied

    wait_until(lambda: "store cannot be read; the program keeps its current values"
               in run.stderr(), timeout=15)
    wait_until(lambda: not setup.cache.exists(), timeout=10)
    denied = [line for line in run.stderr().splitlines() if "cannot be read" in line]
    assert len(denied) == 1 and "variable=DB" in denied[0], denied
    accesses = audit_of(setup, "access")
    assert accesses.index(("DB", "unavailable")) < accesses.index(("DB", "denied")), accesses
    # the file goes first, then the log line and the audit record say why
    wait_until(lambda: audit_of(setup, "cache") == [(None, "deleted")], timeout=5)
    assert run.starts() == [(first, fp(setup.value))]

    run.stop()
    setup.proxy.cut()
    later = setup.run(env=env)
    assert later.returncode == 69 and later.stdout == "", later.stderr
    run.assert_clean(setup.value, token)
    setup.assert_clean(later.stderr, run.stderr(), values=(token,))


def test_old_cache_file_put_back_is_refused(cache_setup: CacheSetup) -> None:
    """The rollback: an authentic file from before a rotation, copied back over the
    newer one within --cache-max-age, would start the program on the old secret."""
    setup = cache_setup
    setup.warm()
    written = time.monotonic()
    old = setup.dir / "old.bin"
    shutil.copyfile(setup.cache, old)  # what the attacker kept
    new = canary("rotated")
    setup.openbao.kv2_put(setup.path, {"value": new, "user": "app"})
    rotated = setup.run()
    assert rotated.returncode == 0 and f"fp {fp(new)}" in rotated.stdout, rotated.stderr
    time.sleep(max(0.0, written + 2.5 - time.monotonic()))  # past the write's slack

    shutil.copyfile(old, setup.cache)  # put back
    setup.proxy.cut()
    result = setup.run()

    assert result.returncode == 69, result.stderr
    assert result.stdout == "", "the program must not start on the old secret"
    lines = [line for line in result.stderr.splitlines() if "fallback cache" in line]
    assert len(lines) == 1 and "put in place" in lines[0] and "(deleted)" in lines[0], lines
    assert str(setup.cache) in lines[0]
    assert audit_of(setup, "cache") == [(None, "refused")]
    assert not setup.cache.exists()
    setup.assert_clean(rotated.stderr, result.stderr, values=(new,))


@pytest.mark.parametrize(("mode", "why"), [
    (0o666, "open to other users"),
    (0o644, "open to other users"),
    (0o640, "readable by its group"),
    (0o620, "writable by its group"),
])
def test_key_file_others_may_read_is_refused(
    tmp_path: Path, base_env: dict[str, str], mode: int, why: str
) -> None:
    value, key = canary(), secrets.token_urlsafe(32)
    (tmp_path / "secret").write_text(value)
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    key_file.chmod(mode)
    env = {**base_env, "DB": f"ref+file://{tmp_path}/secret"}
    args = ["--no-env-file", "--cache", str(tmp_path / "c.bin"),
            "--cache-key-file", str(key_file), "--"]

    refused = run_envwrap([*args, *CHILD], env=env, cwd=tmp_path)

    assert refused.returncode == 78, refused.stderr
    assert refused.stdout == "", "the program must not start"
    assert f"--cache-key-file '{key_file}': the key file is {why} (mode {mode:04o})" \
        in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "c.bin").exists()
    key_file.chmod(0o600)
    accepted = run_envwrap([*args, *CHILD], env=env, cwd=tmp_path)
    assert accepted.returncode == 0 and f"fp {fp(value)}" in accepted.stdout, accepted.stderr
    for text in (refused.stderr, accepted.stderr):
        assert_not_leaked(value, text)
        assert_not_leaked(key, text)
