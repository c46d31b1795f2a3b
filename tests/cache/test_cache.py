"""``--cache`` file format and key handling (issue 13): pure and fast.

The sealed format is checked directly: a round trip, each reason a file is not
used (wrong key, other references, truncated, expired, from the future), a
property test that flipping any byte of a file makes it unusable, and the
canary check that no form of a value (plain, base64, hex, JSON-escaped) is in
the file. Concurrent writers are real processes sharing one file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envwrap.backends import Fetched
from envwrap.cache.fallback import FallbackCache
from envwrap.cache.key import read_key
from envwrap.cache.sealed import Unusable, reference_digest, seal, unseal
from envwrap.config import parse_args
from envwrap.errors import ConfigError
from envwrap.refs import Locator
from testsupport import ROOT
from testsupport.helpers import canary, forms

KEY = ("k" * 16 + os.urandom(16).hex()).encode()
NOW = 1_800_000_000.0
DB = Locator("vault", "secret/db")
API = Locator("aws-sm", "prod/api", (("version-stage", "AWSCURRENT"),))


def secrets_for(value: str) -> dict[Locator, Fetched]:
    return {
        DB: Fetched({"user": "app", "password": value, "port": 5432}, version="7"),
        API: Fetched(value + "-api", version="v-1234"),
    }


def test_round_trip_keeps_data_and_versions() -> None:
    value = canary()
    blob = seal(KEY, secrets_for(value), written=NOW)
    fetched, written = unseal(KEY, blob, [API, DB], now=NOW + 60, max_age=3600)
    assert written == NOW
    assert fetched[DB].data == {"user": "app", "password": value, "port": 5432}
    assert fetched[DB].version == "7"
    assert fetched[API].data == value + "-api" and fetched[API].version == "v-1234"
    assert set(fetched) == {DB, API}


def test_reference_set_digest_ignores_order_and_duplicates() -> None:
    assert reference_digest([DB, API]) == reference_digest([API, DB, DB])
    assert reference_digest([DB]) != reference_digest([DB, API])
    assert reference_digest([Locator("vault", "secret/db", (("version", "1"),))]) != \
        reference_digest([DB])


@pytest.mark.parametrize(
    ("change", "reason", "deleted"),
    [
        ({"material": b"x" * 32}, "cannot be decrypted", False),
        ({"locators": [DB]}, "other references", False),
        ({"locators": [DB, API, Locator("vault", "secret/other")]}, "other references", False),
        ({"now": NOW + 3601}, "expired", True),
        ({"now": NOW - 3600}, "in the future", False),
    ],
    ids=["wrong key", "fewer references", "more references", "expired", "future"],
)
def test_unusable_files(change: dict[str, object], reason: str, deleted: bool) -> None:
    blob = seal(KEY, secrets_for(canary()), written=NOW)
    arguments: dict[str, object] = {"material": KEY, "locators": [DB, API], "now": NOW + 1}
    arguments.update(change)
    with pytest.raises(Unusable) as caught:
        unseal(arguments["material"], blob, arguments["locators"],  # type: ignore[arg-type]
               now=arguments["now"], max_age=3600)  # type: ignore[arg-type]
    assert reason in caught.value.reason
    assert caught.value.delete is deleted


def test_every_truncation_is_unusable() -> None:
    blob = seal(KEY, secrets_for(canary()), written=NOW)
    for length in range(len(blob)):
        with pytest.raises(Unusable) as caught:
            unseal(KEY, blob[:length], [DB, API], now=NOW, max_age=3600)
        assert not caught.value.delete


BLOB = seal(KEY, secrets_for("hypothesis-value-0123456789"), written=NOW)


@settings(max_examples=400, deadline=None)
@given(index=st.integers(0, len(BLOB) - 1), mask=st.integers(1, 255))
def test_flipping_any_byte_makes_the_file_unusable(index: int, mask: int) -> None:
    tampered = bytearray(BLOB)
    tampered[index] ^= mask
    with pytest.raises(Unusable) as caught:
        unseal(KEY, bytes(tampered), [DB, API], now=NOW + 1, max_age=3600)
    # a flipped write time must not pass for "expired" (which deletes the file)
    assert not caught.value.delete


def test_file_holds_no_form_of_a_value(tmp_path: Path) -> None:
    value = canary() + '"é\\/\n\t' + canary("tail")  # JSON escaping differs from plain
    cache = FallbackCache(str(tmp_path / "cache.bin"), KEY, 3600)
    cache.save(secrets_for(value))
    content = (tmp_path / "cache.bin").read_bytes()
    assert len(content) > 200
    for form in forms(value):
        assert form not in content, form
    assert KEY not in content
    assert (tmp_path / "cache.bin").stat().st_mode & 0o777 == 0o600
    # the forms are right: the sealed payload's plaintext does hold the JSON form
    assert forms(value)[1] in json.dumps(value).encode()


def test_padding_hides_small_length_differences() -> None:
    short = seal(KEY, {DB: Fetched("a" * 10)}, written=NOW)
    long = seal(KEY, {DB: Fetched("a" * 200)}, written=NOW)
    assert len(short) == len(long)


def test_symlink_at_the_cache_path_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / "cache.bin").symlink_to(victim)
    cache = FallbackCache(str(tmp_path / "cache.bin"), KEY, 3600)
    with pytest.raises(Unusable, match="cannot be opened"):
        cache.load([DB])
    cache.save({DB: Fetched("x" * 20)})
    assert victim.read_text() == "untouched"
    assert not (tmp_path / "cache.bin").is_symlink()


# -- the key --------------------------------------------------------------------------


def settings_for(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> object:
    return parse_args(["--cache", str(tmp_path / "c.bin"), *args, "--", "true"], env or {})


def test_key_from_file_drops_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(KEY + b"\n")
    (tmp_path / "key").chmod(0o600)
    chosen = settings_for(tmp_path, "--cache-key-file", str(tmp_path / "key"))
    assert read_key(chosen, {}) == KEY  # type: ignore[arg-type]
    assert read_key(settings_for(tmp_path), {"ENVWRAP_CACHE_KEY": KEY.decode()}) == KEY  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--cache-key-file", "{tmp}/missing"), {}, "--cache-key-file '{tmp}/missing': cannot read"),
        (("--cache-key-file", "{tmp}"), {}, "--cache-key-file '{tmp}': cannot read"),
        (("--cache-key-file", "{tmp}/short"), {}, "shorter than 16 bytes"),
        ((), {"ENVWRAP_CACHE_KEY": "short"}, "ENVWRAP_CACHE_KEY: the key is shorter"),
        ((), {}, "--cache needs a key"),
        (("--cache-key-file", "{tmp}/short"), {"ENVWRAP_CACHE_KEY": "x" * 32}, "not both"),
    ],
    ids=["missing", "directory", "short file", "short variable", "none", "both"],
)
def test_key_errors_name_the_option_never_the_key(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    (tmp_path / "short").write_text("secret-ish\n")
    (tmp_path / "short").chmod(0o600)
    chosen = settings_for(tmp_path, *(a.format(tmp=tmp_path) for a in args))
    with pytest.raises(ConfigError) as caught:
        read_key(chosen, env)  # type: ignore[arg-type]
    assert message.format(tmp=tmp_path) in str(caught.value)
    assert caught.value.exit_code == 78
    assert "secret-ish" not in str(caught.value) and "short\"" not in str(caught.value)


# -- concurrent writers and readers ----------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from envwrap.backends import Fetched
    from envwrap.cache.fallback import FallbackCache
    from envwrap.refs import Locator
    path, key, label, rounds = sys.argv[1], sys.argv[2].encode(), sys.argv[3], int(sys.argv[4])
    cache = FallbackCache(path, key, 3600)
    locators = [Locator("vault", f"secret/s{i}") for i in range(5)]
    for n in range(rounds):
        cache.save({loc: Fetched({"v": f"{label}-{n}" * 50}, version=str(n)) for loc in locators})
""")

READER = textwrap.dedent("""
    import os, sys
    from envwrap.cache.fallback import FallbackCache, Unusable
    from envwrap.refs import Locator
    path, key, stop = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
    cache = FallbackCache(path, key, 3600)
    locators = [Locator("vault", f"secret/s{i}") for i in range(5)]
    reads = failures = 0
    while not os.path.exists(stop):
        try:
            fetched, _ = cache.load(locators)
        except Unusable as why:
            failures += 1
            print("unusable:", why.reason, file=sys.stderr)
            continue
        labels = {item.data["v"][:12] for item in fetched.values()}
        versions = {item.version for item in fetched.values()}
        assert len(labels) == 1 and len(versions) == 1, (labels, versions)  # one whole write
        reads += 1
    print(reads, failures)
""")


def test_concurrent_writers_never_leave_an_unreadable_file(tmp_path: Path) -> None:
    path, stop, key = str(tmp_path / "shared.bin"), str(tmp_path / "stop"), KEY.hex()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def spawn(script: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    subprocess.run([sys.executable, "-c", WRITER, path, key, "seed", "1"], env=env, check=True)
    readers = [spawn(READER, path, key, stop) for _ in range(2)]
    writers = [spawn(WRITER, path, key, f"w{i}", "150") for i in range(3)]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    Path(stop).touch()
    for reader in readers:
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        reads, failures = map(int, out.split())
        assert failures == 0, err
        assert reads > 0
    # last writer wins, and no temporary file is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.bin", "stop"]


@pytest.mark.parametrize("length", [16, 32, 33, 64, 100])
def test_hkdf_matches_cryptography(length: int) -> None:
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from envwrap.cache.sealed import hkdf_sha256

    salt, material = os.urandom(16), os.urandom(40)
    expected = HKDF(algorithm=SHA256(), length=length, salt=salt, info=b"envwrap cache v1")
    assert hkdf_sha256(material, salt, b"envwrap cache v1", length) == expected.derive(material)


def test_rfc5869_test_case_1() -> None:
    from envwrap.cache.sealed import hkdf_sha256

    okm = hkdf_sha256(bytes.fromhex("0b" * 22), bytes.fromhex("000102030405060708090a0b0c"),
                      bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                         "34007208d5b887185865")


def test_check_recognises_the_same_secrets_only() -> None:
    from envwrap.cache.sealed import holds

    value = canary()
    blob = seal(KEY, secrets_for(value), written=NOW)
    same = dict(reversed(list(secrets_for(value).items())))  # order does not matter
    assert holds(KEY, blob, same, now=NOW + 10, within=60) == NOW
    assert holds(KEY, blob, secrets_for(value + "x"), now=NOW + 10, within=60) is None
    changed_version = {**secrets_for(value), API: Fetched(value + "-api", version="v-9")}
    assert holds(KEY, blob, changed_version, now=NOW + 10, within=60) is None
    assert holds(KEY, blob, same, now=NOW + 61, within=60) is None  # not recent enough
    assert holds(b"w" * 32, blob, same, now=NOW + 10, within=60) is None  # other key
    assert holds(KEY, blob, {DB: secrets_for(value)[DB]}, now=NOW + 10, within=60) is None


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, len(BLOB) - 1), mask=st.integers(1, 255))
def test_flipping_any_byte_defeats_the_check(index: int, mask: int) -> None:
    from envwrap.cache.sealed import holds

    tampered = bytearray(BLOB)
    tampered[index] ^= mask
    same = secrets_for("hypothesis-value-0123456789")
    assert holds(KEY, BLOB, same, now=NOW + 1, within=60) == NOW
    assert holds(KEY, bytes(tampered), same, now=NOW + 1, within=60) is None


def test_kept_cache_does_not_load_cryptography(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from envwrap.backends import Fetched
        from envwrap.cache.fallback import FallbackCache
        from envwrap.refs import Locator
        cache = FallbackCache({str(tmp_path / "c.bin")!r}, b"k" * 32, 3600)
        fetched = {{Locator("vault", "secret/a"): Fetched({{"v": "x" * 20}}, "1")}}
        if sys.argv[1] == "write":
            cache.save(fetched)
        else:
            assert cache.holds_recent(fetched)
            assert not cache.holds_recent({{Locator("vault", "secret/a"): Fetched("y", "2")}})
        print(any(m.startswith("cryptography") for m in sys.modules))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = [sys.executable, "-c", script]
    wrote = subprocess.run([*run, "write"], env=env, capture_output=True, text=True, check=True)
    kept = subprocess.run([*run, "check"], env=env, capture_output=True, text=True, check=True)
    assert (wrote.stdout, kept.stdout) == ("True\n", "False\n")


# -- a file put back, a key file others may read (docs/SECURITY.md, "Cache") -----------------


def test_file_put_in_place_after_its_write_time_is_refused_and_deleted(tmp_path: Path) -> None:
    """An authentic file sealed 10 s before it reached its place: copied back, restored."""
    import time

    path = tmp_path / "cache.bin"
    fetched = secrets_for(canary())
    path.write_bytes(seal(KEY, fetched, written=time.time() - 10))
    path.chmod(0o600)
    cache = FallbackCache(str(path), KEY, 3600)
    assert not cache.holds_recent(fetched), "a put-back file is rewritten, never kept"
    with pytest.raises(Unusable) as caught:
        cache.load([DB, API])
    assert "put in place 10s after envwrap wrote it" in caught.value.reason
    assert caught.value.delete and not path.exists()


def test_file_envwrap_wrote_is_used(tmp_path: Path) -> None:
    cache = FallbackCache(str(tmp_path / "cache.bin"), KEY, 3600)
    fetched = secrets_for(canary())
    cache.save(fetched)
    loaded, _ = cache.load([DB, API])
    assert set(loaded) == set(fetched)
    assert all(loaded[loc].same_content(fetched[loc]) for loc in fetched)
    assert cache.holds_recent(fetched)


def test_hard_link_kept_and_renamed_back_later_is_refused(tmp_path: Path) -> None:
    """The attacker keeps a link to the old inode and renames it back after a rotation:
    the rename moves the inode's change time (which nobody but root can set back)."""
    import time

    from envwrap.cache.fallback import PUT_BACK_SLACK

    path, kept = tmp_path / "cache.bin", tmp_path / "kept"
    cache = FallbackCache(str(path), KEY, 3600)
    cache.save(secrets_for("old-" + canary()))
    os.link(path, kept)  # at once: within the slack of the old file's write time
    time.sleep(PUT_BACK_SLACK + 0.3)
    cache.save(secrets_for("new-" + canary()))
    os.replace(kept, path)
    with pytest.raises(Unusable, match="put in place"):
        cache.load([DB, API])


@pytest.mark.parametrize(
    ("mode", "mine", "refused"),
    [
        (0o600, True, None), (0o400, True, None),
        (0o644, True, "open to other users"), (0o604, True, "open to other users"),
        (0o666, False, "open to other users"), (0o620, False, "writable by its group"),
        (0o640, True, "readable by its group"), (0o440, True, "readable by its group"),
        # root shares the key with the program's group (a Kubernetes Secret with fsGroup)
        (0o440, False, None), (0o640, False, None),
    ],
)
def test_key_file_permissions(mode: int, mine: bool, refused: str | None) -> None:
    from envwrap.cache.key import too_open

    owner = os.geteuid() if mine else os.geteuid() + 1
    assert too_open(0o100000 | mode, owner) == refused


def test_keeper_writes_nothing_after_a_refusal_until_every_store_answers(tmp_path: Path) -> None:
    """The order the rotation policy's observer thread keeps: a generation that starts
    after a denial (on values read before it) does not bring the file back; a round in
    which every store answered does."""
    from envwrap.cache.keeper import CacheKeeper
    from envwrap.environment import SecretEnvironment
    from envwrap.errors import AuthError, StoreUnavailableError

    path = tmp_path / "cache.bin"
    settings = parse_args(["--no-env-file", "--", "true"], {})
    secrets = SecretEnvironment.load(settings, {"DB": "vault://secret/db#password"})  # type: ignore[arg-type]
    before = secrets.compose({DB: Fetched({"password": canary()}, version="1")})
    after = secrets.compose({DB: Fetched({"password": canary()}, version="2")})
    keeper = CacheKeeper(FallbackCache(str(path), KEY, 3600))
    keeper.generation_changed(before, before)
    assert path.exists()

    keeper.access_refused(DB, StoreUnavailableError("unreachable"))
    assert path.exists(), "an outage is not an answer"
    keeper.access_refused(DB, AuthError("permission denied (HTTP 403)"))
    assert not path.exists()
    keeper.generation_changed(after, before)
    assert not path.exists(), "values read before the denial are not written back"

    keeper.round_done(after, secrets, after.fetched)
    assert path.exists()
