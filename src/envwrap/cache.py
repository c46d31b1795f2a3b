"""``--cache``: the last good secrets, encrypted at rest, for a start during an outage
(docs/cache.md).

After every successful resolution and every applied rotation envwrap seals the
secrets the program runs on into ``--cache PATH``. When a store is
*unreachable* at start (the retryable errors that end in exit 69 after
``--start-timeout``), the program starts from that file instead -- if it was
written for the same references and is younger than ``--cache-max-age``.

What is stored: every locator (a secret without its ``#KEY``) with the secret
as its store returned it and its version. Composing the environment from that
is exactly what a live start composes from, so a cached start differs from a
live one only in where the secrets came from; the ``.env`` files and the
process environment are read afresh either way.

A partial outage (one store down, another up) serves the *whole* set from the
cache, never a mix: the cached set is a snapshot the program already ran on,
while a mix of live and cached values may never have existed together (a user
name rotated in one store, its password cached from before in another). With
``--watch`` the live values replace it as a rotation once every store answers.

File format (version 1; integers big-endian)::

    offset  size  field
    0       7     magic b"EWCACHE"
    7       1     format version
    8       8     write time, milliseconds since the Unix epoch
    16      16    HKDF salt, random per write
    32      12    AES-GCM nonce, random per write
    44      32    SHA-256 of the sorted locators (the reference set)
    76      ...   AES-256-GCM ciphertext of the payload, then its 16-byte tag
    end-32  32    check: HMAC-SHA256 of everything before it and of the payload

The AES key is HKDF-SHA256(key material, salt, info ``b"envwrap cache v1"``);
the whole header is the associated data, so the version, the write time and
the reference set are authenticated with the secrets: nobody without the key
can make a file look younger or move it to other references. The payload is
JSON (the secrets sorted by locator) padded with spaces to a multiple of 256
bytes, so that the file's size says little about the secrets' lengths. The file
holds no plaintext value, no encoding of one, and no key.

The check is keyed too (HKDF info ``b"envwrap cache check v1"``, the same
per-file salt): without the key it says nothing, not even whether two files
hold the same secrets. It lets a start whose secrets did not change see that
the file already holds them, whole and unaltered, with the standard library
alone -- without loading cryptography, whose compiled module costs several
milliseconds. Reading a file for use verifies it as well.
"""

from __future__ import annotations

import os
import time

from envwrap import log
from envwrap.errors import EX_DATAERR, EX_NOPERM, BackendMissingError, ConfigError, EnvwrapError
from envwrap.telemetry import audit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

    from envwrap.backends import Fetched
    from envwrap.config import Settings
    from envwrap.environment import Composed, SecretEnvironment
    from envwrap.refs import Locator

__all__ = [
    "KEY_VARIABLE",
    "CacheKeeper",
    "FallbackCache",
    "Unusable",
    "configure",
    "fall_back",
    "hkdf_sha256",
    "holds",
    "reference_digest",
    "remember_start",
    "seal",
    "unseal",
]

MAGIC = b"EWCACHE"
FORMAT_VERSION = 1
HEADER_FORMAT = ">7sBQ16s12s32s"
HEADER_SIZE = 76
CHECK_SIZE = 32
TAG_SIZE = 16
PADDING = 256
#: the key material must be at least this long: HKDF does not stretch a weak key
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096
MAX_FILE_BYTES = 64 * 1024 * 1024
#: a file written further than this in the future (clock skew between nodes) is not used
FUTURE_SKEW = 300.0
KEY_VARIABLE = "ENVWRAP_CACHE_KEY"
KEY_HINT = "generate one with: openssl rand -base64 32"
_INFO = b"envwrap cache v1"
_CHECK_INFO = b"envwrap cache check v1"
#: with --watch, a confirmed cache is rewritten once this share of --cache-max-age has passed
REFRESH_SHARE = 1 / 8


class Unusable(Exception):
    """Why a cache file cannot be used; ``delete`` when it must also be removed."""

    def __init__(self, reason: str, *, delete: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delete = delete


# -- the sealed format (pure) --------------------------------------------------------


def reference_digest(locators: Iterable[Locator]) -> bytes:
    """SHA-256 of the sorted, de-duplicated locators: the identity of a reference set."""
    import hashlib
    import json

    canonical = sorted({(loc.scheme, loc.path, loc.params) for loc in locators})
    text = json.dumps([[s, p, [list(kv) for kv in q]] for s, p, q in canonical],
                      separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).digest()


def hkdf_sha256(material: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869), extract then expand.

    Written on the standard library's HMAC, which every store client has loaded
    already, instead of importing cryptography's KDF modules on the start-up
    path; a test checks it against cryptography's ``HKDF``.
    """
    import hashlib
    import hmac

    prk = hmac.new(salt, material, hashlib.sha256).digest()
    blocks, block, counter = b"", b"", 1
    while len(blocks) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        blocks += block
        counter += 1
    return blocks[:length]


def _primitives() -> tuple[Any, type[Exception]]:
    """(AESGCM, InvalidTag), imported on first use.

    AESGCM is taken from cryptography's compiled module, which its public
    ``ciphers.aead`` module only re-exports: that skips the pure-Python cipher
    modules (~3 ms of start-up). Should a release move it, the public import
    is used.
    """
    try:
        from cryptography.exceptions import InvalidTag

        try:
            from cryptography.hazmat.bindings._rust import openssl as compiled

            aesgcm: Any = compiled.aead.AESGCM
        except (ImportError, AttributeError):
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM as aesgcm
    except ImportError:
        raise BackendMissingError(
            "--cache needs the 'cryptography' package", hint="pip install 'envwrap-secrets[cache]'"
        ) from None
    return aesgcm, InvalidTag


def _payload(fetched: Mapping[Locator, Fetched]) -> bytes:
    """The plaintext: every secret with its version, sorted by locator, padded."""
    import json

    entries = [
        [loc.scheme, loc.path, [list(kv) for kv in loc.params], item.data, item.version]
        for loc, item in sorted(fetched.items(), key=lambda e: (e[0].scheme, e[0].path,
                                                                e[0].params))
    ]
    try:
        payload = json.dumps({"secrets": entries}, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        raise ConfigError("--cache: a secret is not JSON data and cannot be cached") from None
    return payload + b" " * (-len(payload) % PADDING)


def _check(material: bytes, salt: bytes, sealed: bytes, payload: bytes) -> bytes:
    import hashlib
    import hmac

    key = hkdf_sha256(material, salt, _CHECK_INFO)
    return hmac.new(key, sealed + payload, hashlib.sha256).digest()


def seal(material: bytes, fetched: Mapping[Locator, Fetched], *, written: float) -> bytes:
    """The cache file's bytes for ``fetched`` (every locator of the reference set)."""
    import struct

    aesgcm, _ = _primitives()
    payload = _payload(fetched)
    salt, nonce = os.urandom(16), os.urandom(12)
    header = struct.pack(HEADER_FORMAT, MAGIC, FORMAT_VERSION, int(written * 1000), salt, nonce,
                         reference_digest(fetched))
    key = hkdf_sha256(material, salt, _INFO)
    sealed: bytes = header + aesgcm(key).encrypt(nonce, payload, header)
    return sealed + _check(material, salt, sealed, payload)


def holds(
    material: bytes, blob: bytes, fetched: Mapping[Locator, Fetched], *, now: float,
    within: float,
) -> float | None:
    """The write time of ``blob`` if it holds exactly ``fetched`` and was written less
    than ``within`` seconds ago; else ``None``. Standard library only (the check)."""
    import hmac
    import struct

    if len(blob) < HEADER_SIZE + TAG_SIZE + CHECK_SIZE:
        return None
    magic, version, written_ms, salt, _, digest = struct.unpack_from(HEADER_FORMAT, blob)
    written = written_ms / 1000
    if (magic, version) != (MAGIC, FORMAT_VERSION) or not -FUTURE_SKEW <= now - written < within:
        return None
    if digest != reference_digest(fetched):
        return None
    expected = _check(material, salt, blob[:-CHECK_SIZE], _payload(fetched))
    return written if hmac.compare_digest(blob[-CHECK_SIZE:], expected) else None


def unseal(
    material: bytes, blob: bytes, locators: Iterable[Locator], *, now: float, max_age: float
) -> tuple[dict[Locator, Fetched], float]:
    """The secrets in ``blob`` and their write time; raises :class:`Unusable` with the reason.

    Checked in this order: the format, the reference set, the authentication
    tag (a wrong key and an altered byte look the same), then the age -- only
    an authentic file can be judged expired (and deleted for it).
    """
    import hmac
    import struct

    if len(blob) < HEADER_SIZE + TAG_SIZE + CHECK_SIZE:
        raise Unusable("truncated, or not an envwrap cache file")
    magic, version, written_ms, salt, nonce, digest = struct.unpack_from(HEADER_FORMAT, blob)
    if magic != MAGIC:
        raise Unusable("not an envwrap cache file")
    if version != FORMAT_VERSION:
        raise Unusable(f"format version {version} is not one this envwrap reads")
    wanted = list(locators)
    if digest != reference_digest(wanted):
        raise Unusable("written for other references")
    aesgcm, invalid_tag = _primitives()
    header, sealed = blob[:HEADER_SIZE], blob[:-CHECK_SIZE]
    try:
        key = hkdf_sha256(material, salt, _INFO)
        payload = aesgcm(key).decrypt(nonce, sealed[HEADER_SIZE:], header)
    except invalid_tag:
        raise Unusable("cannot be decrypted: a wrong key, or the file was altered") from None
    if not hmac.compare_digest(blob[-CHECK_SIZE:], _check(material, salt, sealed, payload)):
        raise Unusable("its check does not match: the file was altered")
    written = written_ms / 1000
    age = now - written
    if age > max_age:
        raise Unusable(f"expired: written {_ago(age)} ago, over --cache-max-age", delete=True)
    if age < -FUTURE_SKEW:
        raise Unusable("written in the future: check the clocks")
    return _entries(payload, wanted), written


def _entries(payload: bytes, wanted: list[Locator]) -> dict[Locator, Fetched]:
    import json

    from envwrap.backends import Fetched
    from envwrap.refs import Locator

    try:
        entries = json.loads(payload)["secrets"]
        fetched = {
            Locator(scheme, path, tuple((str(k), str(v)) for k, v in params)):
                Fetched(data, None if version is None else str(version))
            for scheme, path, params, data, version in entries
        }
    except (ValueError, KeyError, TypeError):
        raise Unusable("its content is not what this envwrap writes") from None
    if set(fetched) != set(wanted) or not all(
        isinstance(item.data, str | dict) for item in fetched.values()
    ):
        raise Unusable("its content is not what this envwrap writes")
    return fetched


def _ago(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 120:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


# -- the file ---------------------------------------------------------------------------


class FallbackCache:
    """One ``--cache`` file and its key material (never shown in ``repr``)."""

    def __init__(
        self,
        path: str,
        material: bytes,
        max_age: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.path.abspath(path)
        self._material = material
        self.max_age = max_age
        self.clock = clock
        #: clock() of the last write by this process (None: not written yet)
        self.saved_at: float | None = None

    def __repr__(self) -> str:
        return f"FallbackCache({self.path!r}, max_age={self.max_age})"

    def save(self, fetched: Mapping[Locator, Fetched]) -> None:
        """Seal ``fetched`` into the file, atomically, mode 0600 (last writer wins).

        Raises :class:`ConfigError` (78) naming ``--cache`` when it cannot be written.
        """
        from envwrap.render import write_secret_file

        now = self.clock()
        write_secret_file(self.path, seal(self._material, fetched, written=now),
                          option="--cache", only_if_changed=False)
        self.saved_at = now
        log.debug("fallback cache written", file=self.path)

    def holds_recent(self, fetched: Mapping[Locator, Fetched]) -> bool:
        """Whether the file holds ``fetched`` already, written within the refresh share of
        --cache-max-age: a restart storm with unchanged secrets then reads the file
        instead of writing it (two fsyncs) and never loads cryptography."""
        try:
            blob, _ = self._read()
        except Unusable:
            return False
        written = holds(self._material, blob, fetched, now=self.clock(),
                        within=self.max_age * REFRESH_SHARE)
        if written is None:
            return False
        self.saved_at = written
        return True

    def load(self, locators: Iterable[Locator]) -> tuple[dict[Locator, Fetched], float]:
        """The cached secrets for ``locators`` and their write time; raises :class:`Unusable`."""
        blob, identity = self._read()
        try:
            return unseal(self._material, blob, locators, now=self.clock(), max_age=self.max_age)
        except Unusable as why:
            if why.delete:
                self._unlink(identity)
            raise

    def discard(self, reason: str) -> None:
        """Delete the file (if any), saying why."""
        if self._unlink(None):
            log.warning(f"fallback cache deleted: {reason}", file=self.path)

    def _read(self) -> tuple[bytes, tuple[int, int]]:
        import stat

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise Unusable("there is none yet") from None
        except OSError as exc:
            raise Unusable(f"cannot be opened ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Unusable("not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise Unusable("too large to be an envwrap cache file")
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks), (info.st_dev, info.st_ino)
        except OSError as exc:
            raise Unusable(f"cannot be read ({exc.strerror})") from None
        finally:
            os.close(fd)

    def _unlink(self, identity: tuple[int, int] | None) -> bool:
        """Remove the file; with ``identity``, only if it is still that file, so that a
        fresh file another envwrap has just put in its place survives."""
        try:
            if identity is not None:
                info = os.lstat(self.path)
                if (info.st_dev, info.st_ino) != identity:
                    return False
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning(f"cannot delete the fallback cache ({exc.strerror})", file=self.path)
            return False
        return True


def read_key(settings: Settings, environ: Mapping[str, str]) -> bytes:
    """The key material from ``--cache-key-file`` or ``ENVWRAP_CACHE_KEY``.

    Raises :class:`ConfigError` (78) naming the option -- never the key -- when
    there is none, both are given, the file cannot be read, or the key is short.
    A trailing newline is not part of the key (``echo`` and editors add one).
    """
    from envwrap.secret import known_values

    path = settings.cache_key_file
    if path and KEY_VARIABLE in environ:
        raise ConfigError(f"give --cache-key-file or {KEY_VARIABLE}, not both")
    if path:
        source = f"--cache-key-file {path!r}"
        try:
            with open(path, "rb") as handle:
                material = handle.read(MAX_KEY_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the key ({exc.strerror})",
                              hint=KEY_HINT) from None
    elif KEY_VARIABLE in environ:
        source = KEY_VARIABLE
        material = os.fsencode(environ[KEY_VARIABLE])
    else:
        raise ConfigError(f"--cache needs a key: --cache-key-file FILE or {KEY_VARIABLE}",
                          hint=KEY_HINT)
    material = material.rstrip(b"\r\n")
    if len(material) < MIN_KEY_BYTES:
        raise ConfigError(f"{source}: the key is shorter than {MIN_KEY_BYTES} bytes",
                          hint=KEY_HINT)
    if len(material) > MAX_KEY_BYTES:
        raise ConfigError(f"{source}: the key is longer than {MAX_KEY_BYTES} bytes")
    # so that the key is redacted wherever it might slip into a message
    known_values.add(material.decode(errors="replace"))
    return material


# -- what envwrap does with it ---------------------------------------------------------
#
# One cache per process, like the audit log: configured by the runner, used by
# the resolution at start, the rotation handler and the watcher.

_state: dict[str, Any] = {"cache": None, "serving": False}


def configure(settings: Settings, environ: Mapping[str, str]) -> FallbackCache | None:
    """Read the key and set up ``--cache``; ``None`` without it. Raises ConfigError (78)."""
    _state.update(cache=None, serving=False)
    if not settings.cache:
        if settings.cache_key_file:
            raise ConfigError("--cache-key-file needs --cache PATH")
        return None
    cache = FallbackCache(settings.cache, read_key(settings, environ), settings.cache_max_age)
    _state["cache"] = cache
    return cache


def fall_back(secrets: SecretEnvironment, error: EnvwrapError) -> dict[Locator, Fetched]:
    """The cached secrets when ``error`` says a store is unreachable; else raise ``error``.

    Denied (77) and not found (65) are answers, not outages: they delete the
    cache, so that revoked access stays revoked. An unusable file is reported
    once, naming it, and ``error`` (exit 69) stands.
    """
    cache: FallbackCache | None = _state["cache"]
    if cache is None:
        raise error
    if error.exit_code in (EX_DATAERR, EX_NOPERM):
        cache.discard(f"a store answered {audit.outcome_of(error.exit_code)}")
        raise error
    if not error.retryable:
        raise error
    try:
        fetched, written = cache.load(secrets.locators())
    except Unusable as why:
        deleted = " (deleted)" if why.delete else ""
        log.warning(f"fallback cache not used: {why.reason}{deleted}", file=cache.path)
        raise error from None
    log.warning(
        "store unreachable; starting from the fallback cache",
        file=cache.path,
        written=_utc(written),
        reference=error.reference,
    )
    for variable, ref in secrets.uses():
        audit.record(
            "access", variable=variable, store=ref.locator.scheme,
            path=ref.locator.path_with_query, key=ref.key, version=fetched[ref.locator].version,
            outcome="cached",
        )
    audit.record("cache", outcome="served", file=cache.path, detail=f"written {_utc(written)}")
    _state.update(serving=True)
    return fetched


def discard_after(error: EnvwrapError) -> None:
    """A live answer made the start fail with ``error``: delete the cache if it says 65 or 77."""
    cache: FallbackCache | None = _state["cache"]
    if cache is not None and not _state["serving"] and error.exit_code in (EX_DATAERR, EX_NOPERM):
        cache.discard(f"a store answered {audit.outcome_of(error.exit_code)}")


def remember_start(composed: Composed) -> None:
    """Write the cache after a live start; raises ConfigError (78) if it cannot be written."""
    cache: FallbackCache | None = _state["cache"]
    if cache is None or not composed.fetched:
        return
    if _state["serving"]:
        return  # never refresh the age of values that were not read live
    if not cache.holds_recent(composed.fetched):
        cache.save(composed.fetched)


def keeper() -> CacheKeeper | None:
    """The observer that keeps ``--cache`` on what runs; ``None`` without ``--cache``."""
    cache: FallbackCache | None = _state["cache"]
    return CacheKeeper(cache) if cache is not None else None


def serving_cached() -> bool:
    """Whether the program started from the cache and not every store answered since."""
    return bool(_state["cache"] is not None and _state["serving"])


class CacheKeeper:
    """Keeps ``--cache`` on what the program runs on; an observer of the rotation policy.

    Told (on the policy's observer thread, never the supervisor's) when a new
    generation runs, and after each watcher round with what the stores hold:
    values confirmed live are rewritten, which restarts their ``--cache-max-age``.
    """

    def __init__(self, cache: FallbackCache) -> None:
        self.cache = cache

    def generation_changed(self, running: Composed, stopped: Composed) -> None:
        if _state["serving"]:
            return  # some values may still be the cached ones; written once all are live
        try:
            self.cache.save(running.fetched)
        except EnvwrapError as err:
            log.error(f"cannot write the fallback cache: {err}")

    def round_done(self, running: Composed, secrets: SecretEnvironment,
                   live: Mapping[Locator, Fetched]) -> None:
        """A watcher round where every store answered: ``live`` is what they hold."""
        cache = self.cache
        if not _runs_on(running, secrets, live):
            return
        going_live = bool(_state["serving"])
        if not going_live and cache.saved_at is not None and cache.clock() - cache.saved_at < (
            cache.max_age * REFRESH_SHARE
        ):
            return
        _state["serving"] = False
        try:
            cache.save(live)
        except EnvwrapError as err:
            log.error(f"cannot write the fallback cache: {err}")
        if going_live:
            # after the write, so that whoever sees this record finds the live values cached
            log.info("every store answers again; the program runs on live values",
                     file=cache.path)
            audit.record("cache", outcome="live", file=cache.path)


def _runs_on(running: Composed, secrets: SecretEnvironment,
             live: Mapping[Locator, Fetched]) -> bool:
    """Whether what the program runs on composes to what the stores hold now."""
    locators = secrets.locators()
    if any(loc not in running.fetched or loc not in live for loc in locators):
        return False
    try:
        return (secrets.compose(running.fetched).environment
                == secrets.compose(dict(live)).environment)
    except EnvwrapError:
        return False
