"""``--cache`` end to end (issue 13): the installed envwrap against a real OpenBao and a
real moto server, behind proxies that can be cut or made to answer errors.

Every rule of docs/cache.md: a start from the cache when the store is unreachable;
never after denied (77) or not found (65), which delete the file; a wrong key, a
tampered, truncated, foreign or expired file is not used (exit 69, one warning
naming the file; expired files deleted); with ``--watch`` the live values come
back as a rotation, with an audit ``cache live`` record. Every test checks that
no value shows in envwrap's output, its audit log, or the cache file.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from testsupport import envwrap_command
from testsupport.cache import CHILD, CacheSetup
from testsupport.fixtures_aws import AwsProxy, MotoServer, aws_env
from testsupport.helpers import assert_not_leaked, canary, fp, run_envwrap, wait_until

pytestmark = pytest.mark.slow

def test_unreachable_store_starts_from_the_cache(cache_setup: CacheSetup) -> None:
    cache_setup.warm()
    cache_setup.proxy.cut()

    result = cache_setup.run()

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"fp {fp(cache_setup.value)}", "scrubbed"]
    warning = [line for line in result.stderr.splitlines() if "fallback cache" in line]
    assert len(warning) == 1 and "warning" in warning[0] and str(cache_setup.cache) in warning[0]
    records = cache_setup.audit_records()
    cached = [r for r in records if r["event"] == "access" and r["outcome"] == "cached"]
    assert [(r["variable"], r["store"], r["key"], r["version"]) for r in cached] == [
        ("DB", "vault", "value", "1")]
    assert [r["outcome"] for r in records if r["event"] == "cache"] == ["served"]
    assert cache_setup.cache.exists()


def test_env_variable_key_works_and_is_scrubbed(cache_setup: CacheSetup) -> None:
    key = cache_setup.key.read_text().strip()
    env = {**cache_setup.env, "ENVWRAP_CACHE_KEY": key}
    args = [a for a in cache_setup.args() if a not in ("--cache-key-file", str(cache_setup.key))]
    live = run_envwrap([*args, "--", *CHILD], env=env)
    assert live.returncode == 0 and live.stdout.endswith("scrubbed\n"), live.stderr
    cache_setup.proxy.cut()
    cached = run_envwrap([*args, "--", *CHILD], env=env)
    assert cached.returncode == 0, cached.stderr
    assert cached.stdout.splitlines() == [f"fp {fp(cache_setup.value)}", "scrubbed"]
    cache_setup.assert_clean(live.stderr, cached.stderr)


def test_without_a_cache_file_exit_69_as_before(cache_setup: CacheSetup) -> None:
    cache_setup.proxy.cut()
    result = cache_setup.run()
    assert result.returncode == 69, result.stderr
    assert result.stdout == "", "the child must not start"
    assert f"fallback cache not used: there is none yet file={cache_setup.cache}" in result.stderr


def test_denied_deletes_the_cache(cache_setup: CacheSetup) -> None:
    cache_setup.warm()
    weak = cache_setup.openbao.child_token(["default"])
    result = cache_setup.run(env={**cache_setup.env, "VAULT_TOKEN": weak})
    assert result.returncode == 77, result.stderr
    assert not cache_setup.cache.exists()
    assert "fallback cache deleted: a store answered denied" in result.stderr
    # and with the store down afterwards, nothing is served any more
    cache_setup.proxy.cut()
    assert cache_setup.run().returncode == 69


def test_not_found_deletes_the_cache(cache_setup: CacheSetup) -> None:
    cache_setup.warm()
    cache_setup.openbao.client.secrets.kv.v2.delete_metadata_and_all_versions(cache_setup.path)
    result = cache_setup.run()
    assert result.returncode == 65, result.stderr
    assert not cache_setup.cache.exists()
    assert "a store answered not_found" in result.stderr


def test_missing_key_in_live_secret_deletes_the_cache(cache_setup: CacheSetup) -> None:
    cache_setup.warm()
    cache_setup.openbao.kv2_put(cache_setup.path, {"user": "app"})  # "value" is gone
    result = cache_setup.run()
    assert result.returncode == 65, result.stderr
    assert not cache_setup.cache.exists()


def test_expired_cache_is_not_used_and_deleted(cache_setup: CacheSetup) -> None:
    cache_setup.warm()
    cache_setup.proxy.cut()
    result = cache_setup.run("--cache-max-age", "0s")  # any age is over zero
    assert result.returncode == 69, result.stderr
    assert "fallback cache not used: expired" in result.stderr and "(deleted)" in result.stderr
    assert not cache_setup.cache.exists()


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:50])


def _wrong_key(cache_setup: CacheSetup) -> None:
    cache_setup.key.write_text(secrets.token_urlsafe(32))


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda s: _wrong_key(s), "cannot be decrypted"),
        (lambda s: _flip(s.cache), "cannot be decrypted"),
        (lambda s: _truncate(s.cache), "truncated"),
    ],
    ids=["wrong key", "tampered", "truncated"],
)
def test_unusable_cache_exits_69_with_one_warning(cache_setup: CacheSetup, spoil: object, reason: str) -> None:
    cache_setup.warm()
    cache_setup.proxy.cut()
    spoil(cache_setup)  # type: ignore[operator]
    before = cache_setup.cache.read_bytes()
    result = cache_setup.run()
    assert result.returncode == 69, result.stderr
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if "fallback cache" in line]
    assert len(lines) == 1 and reason in lines[0] and str(cache_setup.cache) in lines[0], lines
    assert cache_setup.cache.read_bytes() == before, "only expired files are deleted"


def test_cache_of_other_references_is_never_served(cache_setup: CacheSetup) -> None:
    cache_setup.warm()
    other = f"cache/{secrets.token_hex(5)}"
    cache_setup.openbao.kv2_put(other, {"value": cache_setup.value})
    cache_setup.proxy.cut()
    env = {**cache_setup.env, "DB": f"vault://secret/{other}#value"}
    result = cache_setup.run(env=env)
    assert result.returncode == 69, result.stderr
    assert "fallback cache not used: written for other references" in result.stderr
    # a reference added to the same set changes the set too
    env = {**cache_setup.env, "EXTRA": f"vault://secret/{other}#value"}
    assert cache_setup.run(env=env).returncode == 69


def test_restart_with_the_same_secrets_keeps_the_file(cache_setup: CacheSetup) -> None:
    cache_setup.warm()
    before = cache_setup.cache.stat()
    assert cache_setup.run().returncode == 0
    after = cache_setup.cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    new = canary("new")
    cache_setup.openbao.kv2_put(cache_setup.path, {"value": new, "user": "app"})
    assert cache_setup.run().returncode == 0
    assert cache_setup.cache.stat().st_ino != before.st_ino
    cache_setup.proxy.cut()
    served = cache_setup.run()
    assert served.returncode == 0 and f"fp {fp(new)}" in served.stdout, served.stderr
    cache_setup.assert_clean(served.stderr, values=(new,))


def test_concurrent_envwrap_starts_share_one_cache(cache_setup: CacheSetup) -> None:
    cache_setup.warm()
    # a tiny max age makes every start rewrite the file (and find it expired)
    processes = [
        subprocess.Popen(
            [*envwrap_command(), *cache_setup.args("--cache-max-age", "80ms"), "--", *CHILD],
            env=cache_setup.env, cwd=cache_setup.dir,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    cache_setup.proxy.cut()
    result = cache_setup.run()
    assert result.returncode == 0 and f"fp {fp(cache_setup.value)}" in result.stdout, result.stderr
    assert sorted(p.name for p in cache_setup.cache.parent.iterdir()) == ["secrets.bin"]


def test_watch_applies_live_values_once_the_store_answers(
    cache_setup: CacheSetup, envwrap_watch: object
) -> None:
    cache_setup.warm()
    cache_setup.proxy.cut()
    new = canary("new")
    child = ["/bin/sh", "-c", 'printf "started %s %s\\n" "$$" '
             '"$(printf %s "$DB" | sha256sum | cut -c1-12)"; exec sleep 3600']
    run = envwrap_watch(cache_setup.env, child, *cache_setup.args()[3:])  # type: ignore[operator]
    first = run.wait_start(fp(cache_setup.value))
    records = cache_setup.audit_records()
    assert [r["outcome"] for r in records if r["event"] == "cache"] == ["served"]
    written = cache_setup.cache.read_bytes()

    cache_setup.openbao.kv2_put(cache_setup.path, {"value": new, "user": "app"})
    cache_setup.proxy.restore()
    second = run.wait_start(fp(new), timeout=20)
    assert second != first
    wait_until(lambda: any(r["event"] == "cache" and r["outcome"] == "live"
                           for r in cache_setup.audit_records()), timeout=10)
    events = [(r["event"], r["outcome"]) for r in cache_setup.audit_records()
              if r["event"] in ("cache", "rotation")]
    # (issue 12 renames the rotation outcome "ok" to "applied")
    assert events in ([("cache", "served"), ("rotation", outcome), ("cache", "live")]
                      for outcome in ("ok", "applied")), events
    # the cache now holds the live values: served again after another outage
    assert cache_setup.cache.read_bytes() != written
    run.stop()
    cache_setup.proxy.cut()
    result = cache_setup.run()
    assert result.returncode == 0 and f"fp {fp(new)}" in result.stdout, result.stderr
    run.assert_clean(cache_setup.value, new)
    cache_setup.assert_clean(result.stderr, values=(new,))


def test_watch_goes_live_without_restart_when_nothing_changed(
    cache_setup: CacheSetup, envwrap_watch: object
) -> None:
    cache_setup.warm()
    cache_setup.proxy.cut()
    child = ["/bin/sh", "-c", 'printf "started %s %s\\n" "$$" '
             '"$(printf %s "$DB" | sha256sum | cut -c1-12)"; exec sleep 3600']
    run = envwrap_watch(cache_setup.env, child, *cache_setup.args()[3:])  # type: ignore[operator]
    first = run.wait_start(fp(cache_setup.value))
    cache_setup.proxy.restore()
    wait_until(lambda: any(r["event"] == "cache" and r["outcome"] == "live"
                           for r in cache_setup.audit_records()), timeout=15)
    assert run.starts() == [(first, fp(cache_setup.value))], "same values: no restart"
    # logged just before the record; the test's reader thread may lag behind it
    wait_until(lambda: "the program runs on live values" in run.stderr(), timeout=5)
    run.assert_clean(cache_setup.value)


# -- AWS Secrets Manager through a proxy that answers errors -------------------------------


@pytest.fixture
def aws_setup(aws: MotoServer, aws_proxy: AwsProxy, base_env: dict[str, str],
              tmp_path: Path) -> tuple[dict[str, str], Path, str, list[str]]:
    value = canary("aws")
    aws.sm.create_secret(Name="cache/app", SecretString=json.dumps({"token": value}))
    env = aws_env(base_env, aws, AWS_ENDPOINT_URL=aws_proxy.endpoint,
                  DB="aws-sm://cache/app#token", ENVWRAP_CACHE_KEY=secrets.token_hex(32))
    cache = tmp_path / "aws.bin"
    args = ["--no-env-file", "--log-level", "debug", "--start-timeout", "1s",
            "--cache", str(cache), "--"]
    return env, cache, value, args


def test_aws_throttling_serves_and_access_denied_deletes(
    aws_setup: tuple[dict[str, str], Path, str, list[str]], aws_proxy: AwsProxy
) -> None:
    env, cache, value, args = aws_setup
    live = run_envwrap([*args, *CHILD], env=env)
    assert live.returncode == 0 and f"fp {fp(value)}" in live.stdout, live.stderr

    for operation in ("BatchGetSecretValue", "GetSecretValue"):
        aws_proxy.faults[operation] = (400, "ThrottlingException", None)
    served = run_envwrap([*args, *CHILD], env=env)
    assert served.returncode == 0 and f"fp {fp(value)}" in served.stdout, served.stderr
    assert "starting from the fallback cache" in served.stderr

    for operation in ("BatchGetSecretValue", "GetSecretValue"):
        aws_proxy.faults[operation] = (400, "AccessDeniedException", None)
    denied = run_envwrap([*args, *CHILD], env=env)
    assert denied.returncode == 77, denied.stderr
    assert not cache.exists()
    for text in (live.stderr, served.stderr, denied.stderr):
        assert_not_leaked(value, text)
        assert_not_leaked(env["ENVWRAP_CACHE_KEY"], text)
    assert os.environ.get("ENVWRAP_CACHE_KEY") is None


def test_partial_outage_serves_the_whole_set_from_the_cache(
    cache_setup: CacheSetup, aws: MotoServer, aws_proxy: AwsProxy
) -> None:
    """Vault down, AWS up: every value comes from the cache, the live AWS one too, so
    that the program gets a set it already ran on, never a mix that never existed."""
    old_token, new_token = canary("old-token"), canary("new-token")
    aws.sm.create_secret(Name="cache/partial", SecretString=old_token)
    env = aws_env(cache_setup.env, aws, AWS_ENDPOINT_URL=aws_proxy.endpoint,
                  TOKEN="aws-sm://cache/partial")
    child = ["/bin/sh", "-c", 'printf "%s %s\\n" "$(printf %s "$DB" | sha256sum | cut -c1-12)" '
             '"$(printf %s "$TOKEN" | sha256sum | cut -c1-12)"']
    live = cache_setup.run(env=env, child=child)
    assert live.stdout == f"{fp(cache_setup.value)} {fp(old_token)}\n", live.stderr

    aws.sm.put_secret_value(SecretId="cache/partial", SecretString=new_token)
    cache_setup.proxy.cut()
    served = cache_setup.run(env=env, child=child)
    assert served.returncode == 0, served.stderr
    assert served.stdout == f"{fp(cache_setup.value)} {fp(old_token)}\n"
    cache_setup.assert_clean(live.stderr, served.stderr, values=(old_token, new_token))


def test_watch_rewrites_a_confirmed_cache_before_it_expires(
    cache_setup: CacheSetup, envwrap_watch: object
) -> None:
    """A long-running program keeps a fresh cache: every round that confirms the values
    rewrites the file once an eighth of --cache-max-age has passed (here 0.5s)."""
    run = envwrap_watch(cache_setup.env, sh_child_db(), *cache_setup.args("--cache-max-age", "4s")[3:])  # type: ignore[operator]
    first = run.wait_start(fp(cache_setup.value))
    written = wait_until(lambda: cache_setup.cache.exists() and cache_setup.cache.read_bytes())
    wait_until(lambda: cache_setup.cache.read_bytes() != written, timeout=15)
    assert run.starts() == [(first, fp(cache_setup.value))]
    assert not [r for r in cache_setup.audit_records() if r["event"] in ("cache", "rotation")]
    run.assert_clean(cache_setup.value)


def sh_child_db() -> list[str]:
    return ["/bin/sh", "-c", 'printf "started %s %s\\n" "$$" '
            '"$(printf %s "$DB" | sha256sum | cut -c1-12)"; exec sleep 3600']


def test_applied_rotation_rewrites_the_cache(
    cache_setup: CacheSetup, envwrap_watch: object
) -> None:
    run = envwrap_watch(cache_setup.env, sh_child_db(), *cache_setup.args()[3:])  # type: ignore[operator]
    run.wait_start(fp(cache_setup.value))
    new = canary("rotated")
    cache_setup.openbao.kv2_put(cache_setup.path, {"value": new, "user": "app"})
    run.wait_start(fp(new), timeout=20)
    run.stop()
    cache_setup.proxy.cut()
    result = cache_setup.run()
    assert result.returncode == 0 and f"fp {fp(new)}" in result.stdout, result.stderr
    run.assert_clean(cache_setup.value, new)
    cache_setup.assert_clean(result.stderr, values=(new,))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cache", "{tmp}/no/such/folder/c.bin", "--cache-key-file", "{tmp}/key"],
         "--cache '{tmp}/no/such/folder/c.bin': cannot open the folder '{tmp}/no'"),
        (["--cache-key-file", "{tmp}/key"], "--cache-key-file needs --cache PATH"),
        (["--cache", "{tmp}/c.bin", "--cache-key-file", "{tmp}/nokey"],
         "--cache-key-file '{tmp}/nokey': cannot read the key"),
        (["--cache", "{tmp}/c.bin"], "--cache needs a key"),
    ],
    ids=["cache folder missing", "key without cache", "key file missing", "no key"],
)
def test_configuration_errors_exit_78_before_the_program_starts(
    tmp_path: Path, base_env: dict[str, str], args: list[str], message: str
) -> None:
    value = canary()
    (tmp_path / "secret").write_text(value)
    (tmp_path / "key").write_text(secrets.token_urlsafe(32))
    (tmp_path / "key").chmod(0o600)
    marker = tmp_path / "started"
    env = {**base_env, "DB": f"ref+file://{tmp_path}/secret"}
    result = run_envwrap(["--no-env-file", *(a.format(tmp=tmp_path) for a in args),
                          "--", "touch", str(marker)], env=env, cwd=tmp_path)
    assert result.returncode == 78, result.stderr
    assert message.format(tmp=tmp_path) in result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()
    assert_not_leaked(value, result.stderr)
    assert_not_leaked((tmp_path / "key").read_text(), result.stderr)
